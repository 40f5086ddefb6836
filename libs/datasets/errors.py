"""The one exception type the data pipeline raises for unusable input."""

from ..utils.errors import DeepLabError


class DatasetError(DeepLabError, ValueError):
    """A dataset file that cannot be used; the message names the file and the problem.

    Subclassing ``ValueError`` lets callers that only know about bad values catch
    it, while scripts can turn it into a one-line ``click.ClickException``.
    """
