"""The queue file and everything written to it: connections and transactions, schema, states,
records, the user side and the hog side of the queue, the claim policy. Imports no click."""
