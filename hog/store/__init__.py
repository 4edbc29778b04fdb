"""The queue file and everything written to it: connections and transactions, schema, states,
the files beside it, the user side and the hog side of the queue, the claim policy. Imports no
click. Records are NamedTuples: cheap to make on the hot path, and rows as they are."""
