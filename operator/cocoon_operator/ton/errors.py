"""Every exception the ``cocoon_operator.ton`` package raises, in one place.

Tree::

    TonError                          base of everything below
    ├── AddressError (ValueError)     malformed / wrong-checksum / wrong-workchain address
    ├── AmountError (ValueError)      malformed or out-of-range TON amount
    ├── WalletError                   cannot build a wallet message (too many transfers, ...)
    │   └── NodeWalletKeyError (ValueError)  a node_wallet_key COCOON would refuse (never echoed)
    ├── RootContractError (ValueError)  bad input for a root-contract message or query (hash, model)
    ├── LocalChainError               the local emulated chain refused an operation
    └── TonClientError                anything that went wrong talking to a v2 HTTP API
        ├── TonTransportError         no usable HTTP response (connection refused, reset, DNS)
        │   └── TonTimeoutError       the per-call timeout elapsed
        ├── TonResponseError          a response arrived but is not what the API promises
        ├── TonApiError               the API answered with an error (HTTP status and/or ok=false)
        │   ├── TonBadRequestError    4xx other than those below: our request is wrong
        │   ├── TonAuthError          401/403: API key missing or rejected
        │   ├── TonNotFoundError      404: unknown method or object
        │   ├── TonRateLimitedError   429: server-side rate limit hit
        │   ├── TonServerError        5xx: the API or its liteserver failed
        │   └── TonMessageRejectedError  sendBoc: the contract did not accept the external message
        └── TonGetMethodError         a get-method ran but exited with a non-zero exit code

Retry policy (see ``client.RetryPolicy``): ``TonTransportError`` (including
``TonTimeoutError``), ``TonRateLimitedError`` and ``TonServerError`` are
*transient*; everything else is final and is raised at once.

No exception message produced by this package ever contains the API key: the
client redacts it from any text it did not produce itself before wrapping.
"""

from __future__ import annotations


class TonError(Exception):
    """Base class of every error raised by ``cocoon_operator.ton``."""


class AddressError(TonError, ValueError):
    """A TON address could not be parsed or is not acceptable."""


class AmountError(TonError, ValueError):
    """A TON amount could not be parsed or is out of range."""


class WalletError(TonError):
    """A wallet message could not be built."""


class NodeWalletKeyError(WalletError, ValueError):
    """A ``node_wallet_key`` that COCOON's runner would refuse.

    Its message says what is wrong (length, alphabet, padding) and never
    contains the key text or any part of it: the key controls the node's money.
    """


class RootContractError(TonError, ValueError):
    """A root-contract hash, model id or message argument is malformed."""


class LocalChainError(TonError):
    """The local emulated chain refused an operation (bad BOC, emulator failure, ...)."""


class TonClientError(TonError):
    """Base class of errors raised by :class:`cocoon_operator.ton.client.TonClient`."""

    #: Whether the client's retry loop may try the same call again.
    transient: bool = False


class TonTransportError(TonClientError):
    """No HTTP response was obtained (connection error, reset, DNS failure)."""

    transient = True


class TonTimeoutError(TonTransportError):
    """The per-call timeout elapsed before a response arrived."""


class TonResponseError(TonClientError):
    """The API answered, but with something that is not a valid v2 response."""


class TonApiError(TonClientError):
    """The API answered with an error.

    ``status`` is the HTTP status, ``code`` the ``code`` field of the JSON body
    when there is one, ``method`` the API method called.
    """

    def __init__(self, message: str, *, status: int, code: int | None, method: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.method = method


class TonBadRequestError(TonApiError):
    """4xx other than 401/403/404/429: the request itself is wrong; never retried."""


class TonAuthError(TonApiError):
    """401/403: the API key is missing, wrong or not allowed this call."""


class TonNotFoundError(TonApiError):
    """404: unknown API method or object."""


class TonRateLimitedError(TonApiError):
    """429: the server-side rate limit was hit; retried with backoff.

    ``retry_after`` is the server's ``Retry-After`` hint in seconds, if any.
    """

    transient = True
    retry_after: float | None = None


class TonServerError(TonApiError):
    """5xx (or ``ok: false`` with a 5xx code): the API or its liteserver failed; retried."""

    transient = True


class TonMessageRejectedError(TonApiError):
    """The external message was not accepted (bad signature, stale seqno, expired, ...).

    Final: re-sending the same BOC cannot succeed. When it follows an earlier
    attempt of the same BOC it usually means that attempt was already applied.
    """


class TonGetMethodError(TonClientError):
    """A get-method was executed but exited with a non-zero TVM exit code."""

    def __init__(self, method: str, exit_code: int) -> None:
        super().__init__(f"get-method {method!r} failed with TVM exit code {exit_code}")
        self.method = method
        self.exit_code = exit_code
