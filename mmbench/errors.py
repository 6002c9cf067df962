"""The one user-facing error type, caught once at the CLI edge."""


class MmbenchError(Exception):
    """An expected failure: bad input or an environment that cannot run the request.

    The message is one line that says what to do; the CLI prints it and exits with `exit_code`.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
