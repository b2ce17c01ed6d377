"""The task layer behind tasks.py: the operations each invoke task calls (app), invoke glue such as
error -> exit code mapping (cli), and the ami.* and report task collections."""
