"""Named exceptions, so callers (CLI, service, tests) can tell user mistakes from bugs."""


class CreditPDError(Exception):
    """Base class of every error this package raises on purpose."""


class SchemaError(CreditPDError):
    """The schema file is missing or malformed."""


class DatasetError(CreditPDError):
    """The dataset file breaks the schema's contract; the message names column, row and value."""


class ModelNotFoundError(CreditPDError):
    """No trained model is in the BentoML model store under the requested tag."""
