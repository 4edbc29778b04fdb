"""The queue as a Python library: Queue (open, submit, read, cancel, retry, wait) and
HogExecutor, a concurrent.futures.Executor whose calls run as tasks on hogs. Imports no click.

Its rooms: `options` (what a task asks for, checked for the library and the command line),
`queue` (the Queue object), `calls` (pickled calls and their outcomes, on the submitting side,
with `byvalue` sending a script's functions as code),
`worker` (what a call's task runs: light), `checkpoint` (requeue with a callable's state),
`local` (hogs that an executor starts on this machine) and `executor`.
"""
