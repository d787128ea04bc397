"""The client side of one KServe v2 server (Triton) on this machine: its loopback address, the model's metadata, one
worker's tritonclient client with its prepared request, malformed requests that must be refused, and one
classification request. runtime/loadtest.py drives these; ``loadtest.py --images`` classifies its photographs with
``classify_once``."""

import http.client
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import numpy as np

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT64": np.int64}
CLASSIFY_TIMEOUT_S = 30.0  # one classification request (loadtest.py --images), as a load-test request's default


class LoadTestError(ValueError):
    """The load test cannot run as asked (the message says what to change)."""


def loopback_address(url: str, *, protocol: str) -> str:
    """``host:port`` for tritonclient from ``url`` (with or without a scheme); refuse non-loopback hosts."""
    example = "grpc://127.0.0.1:8001" if protocol == "grpc" else "http://127.0.0.1:8000"
    try:
        parts = urlsplit(url if "://" in url else f"{protocol}://{url}")
        host, port = parts.hostname, parts.port  # .port raises on "99999" or "abc"
    except ValueError as err:
        raise LoadTestError(f"cannot read {url!r} ({err}); pass e.g. {example}") from None
    if host is None or port is None:
        raise LoadTestError(f"cannot read host and port from {url!r}; pass e.g. {example}")
    if parts.scheme != protocol:  # http://...:8000 with --protocol grpc sent gRPC to the HTTP port
        raise LoadTestError(
            f"{url!r} is not a {protocol}:// address and the load test speaks {protocol} (--protocol): pass the "
            f"server's {protocol} address, as serve prints it"
        )
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadTestError(
                f"{host} is not a loopback address; the load test only targets servers on this machine "
                "(127.0.0.1, ::1 or localhost)"
            )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KServeClient:
    """One worker's tritonclient client and its prepared request."""

    def __init__(
        self, address: str, model: str, batch: np.ndarray, meta: dict[str, Any], *, protocol: str, timeout_s: float
    ):
        self.protocol = protocol
        self.model = model
        self.address, self.input_name = address, meta["inputs"][0]["name"]
        self.timeout = timeout_s
        if self.protocol == "http":
            import tritonclient.http as client_module

            self.client = client_module.InferenceServerClient(
                address, connection_timeout=self.timeout, network_timeout=self.timeout
            )
            outputs = [client_module.InferRequestedOutput(o["name"], binary_data=True) for o in meta["outputs"]]
        else:
            import tritonclient.grpc as client_module

            self.client = client_module.InferenceServerClient(address)
            outputs = [client_module.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
        tensor = client_module.InferInput(meta["inputs"][0]["name"], list(batch.shape), meta["inputs"][0]["datatype"])
        tensor.set_data_from_numpy(batch)
        self.inputs, self.outputs = [tensor], outputs
        self.error_type = client_module.InferenceServerException

    def send_bad(self, number: int) -> str | None:
        """Send the ``number``-th kind of malformed request; None if it was refused with 4xx, else what went wrong."""
        name, body = bad_requests(self.input_name)[number % len(BAD_KINDS)]
        host, port = self.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout)
        try:
            conn.request("POST", f"/v2/models/{self.model}/infer", body=body)
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            return f"malformed request {name!r}: {err}"
        finally:
            conn.close()
        return None if 400 <= status < 500 else f"malformed request {name!r} got HTTP {status}, not 4xx"

    def infer(self) -> Any:
        """One request of the prepared batch; tritonclient's result (``as_numpy(output name)``)."""
        if self.protocol == "http":
            return self.client.infer(self.model, self.inputs, outputs=self.outputs)
        return self.client.infer(self.model, self.inputs, outputs=self.outputs, client_timeout=self.timeout)

    def close(self) -> None:
        self.client.close()


BAD_KINDS = ("huge-batch", "truncated-json", "garbage", "negative-dims", "short-data")


def bad_requests(input_name: str) -> list[tuple[str, bytes]]:
    """One malformed inference body of each kind in ``BAD_KINDS``; pure."""
    import json

    def body(shape: list[int], data: list[float]) -> bytes:
        return json.dumps({"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32", "data": data}]}).encode()

    return [
        ("huge-batch", body([100000, 3, 96, 96], [0.0])),
        ("truncated-json", body([1, 3, 8, 8], [0.0])[:30]),
        ("garbage", b"\x00\x01 not json"),
        ("negative-dims", body([-1, 3, 8, 8], [0.0])),
        ("short-data", body([1, 3, 8, 8], [0.0, 1.0])),
    ]


def model_metadata(address: str, model: str, *, protocol: str) -> dict[str, Any]:
    """The model's inputs and outputs as ``{"inputs": [{name, datatype, shape}], "outputs": [...]}``."""
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(address)
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        ready = client.is_model_ready(model)
        meta = client.get_model_metadata(model, **as_json) if ready else {}
        config = client.get_model_config(model, **as_json) if ready else {}
    except (InferenceServerException, OSError) as err:
        raise LoadTestError(
            f"cannot reach {protocol}://{address} ({err}); is the server running on that port?"
        ) from err
    except http.client.HTTPException as err:  # geventhttpclient's parse error: an answer that is not HTTP
        raise LoadTestError(
            f"{address} does not answer in HTTP ({type(err).__name__}); is it the gRPC port? give the server's HTTP "
            "port, or a grpc:// URL to test gRPC"
        ) from err
    finally:
        client.close()
    if not ready:
        raise LoadTestError(f"model {model!r} is not ready on {address}; check the name and the server log")
    # gRPC's JSON form gives dims (and max_batch_size) as strings, and wraps the config in "config"
    tensors = {k: [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[k]] for k in ("inputs", "outputs")}
    return tensors | {"max_batch_size": int(config.get("config", config).get("max_batch_size", 0))}


def classify_once(url: str, *, model: str, batch: np.ndarray, protocol: str = "http") -> np.ndarray:
    """One request of ``batch`` to ``model``; the first output (the logits) as an array."""
    address = loopback_address(url, protocol=protocol)
    meta = model_metadata(address, model, protocol=protocol)
    client = KServeClient(address, model, batch, meta, protocol=protocol, timeout_s=CLASSIFY_TIMEOUT_S)
    try:
        result = client.infer()
    except (client.error_type, OSError) as err:
        raise LoadTestError(f"the server refused the classification request: {err}") from err
    finally:
        client.close()
    return result.as_numpy(meta["outputs"][0]["name"])


def make_batch(meta: dict[str, Any], *, batch_size: int, seed: int) -> np.ndarray:
    """Random input for the model's (first) input: the batch axis set to ``batch_size``; pure given ``seed``."""
    if len(meta["inputs"]) != 1:
        raise LoadTestError(f"the load test drives single-input models; this one has {len(meta['inputs'])} inputs")
    spec = meta["inputs"][0]
    shape = list(spec["shape"])
    if not shape or shape[0] != -1:
        raise LoadTestError(f"input {spec['name']!r} has shape {shape} without a batch axis; serve with batching")
    if any(d < 0 for d in shape[1:]):
        raise LoadTestError(f"input {spec['name']!r} has dynamic dimensions {shape}; the load test needs fixed ones")
    if spec["datatype"] not in DTYPES:
        raise LoadTestError(f"input datatype {spec['datatype']} is not supported (one of {', '.join(DTYPES)})")
    rng = np.random.default_rng(seed)
    return rng.standard_normal([batch_size, *shape[1:]]).astype(DTYPES[spec["datatype"]])
