"""The TensorRT steps' errors (each message says what to do)."""


class TensorRTNotInstalledError(ImportError):
    """The ``tensorrt`` package cannot be imported (the message says how to install it)."""


class TrtRequestError(ValueError):
    """The requested build cannot be met by this TensorRT version or these inputs (the message says what to do)."""


class TrtBuildError(RuntimeError):
    """TensorRT refused the network (parser errors) or failed to build it."""


class TimingCacheError(TrtBuildError):
    """TensorRT refused even an empty timing cache."""
