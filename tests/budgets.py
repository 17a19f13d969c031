"""Time budgets of tests that wait on other processes.

A test waits on a condition (a file's progress, a process's exit), never on a short wall clock;
these only bound a hang. They are generous because a machine under load (a second job beside the
suite, an oversubscribed CI runner) runs a start-up or a signal handler many times slower.
"""

#: seconds a started process may take to exit after its work or a signal
PROCESS_BUDGET_S = 900
