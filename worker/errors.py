"""The worker's exceptions, all rooted in one base class.

    StreamclfError
     ├── ConfigError      bad configuration or usage (exit code 2)
     ├── BrokerError      the embedded development broker could not start (exit code 1)
     └── MemberFenced     another group member took this one's group_instance_id (exit code 1)

Problems with a single record are not exceptions: they become dead letters (see `codec`).
"""


class StreamclfError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(StreamclfError):
    """The configuration or command line is invalid; the message names the key."""


class BrokerError(StreamclfError):
    """A broker could not be reached, or the embedded one could not be found or started."""


class MemberFenced(StreamclfError):
    """The broker fenced this static member: another one joined with its group_instance_id."""
