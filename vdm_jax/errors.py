"""The one base class for errors a user can act on (a bad config, a missing dataset, an unusable checkpoint).

`main.py` prints such an error as one line and exits non-zero, instead of a traceback from deep inside a library.
"""


class UserError(Exception):
    """A problem with the user's input or environment; the message names the thing and the fix."""
