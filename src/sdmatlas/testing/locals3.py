"""A throwaway S3-compatible HTTP server (moto's standalone server, from PyPI) on a free
loopback port, for tests and benchmarks of releases on object stores.

It is a real server in its own process, spoken to over HTTP by s3fs/aiobotocore exactly
as AWS S3, MinIO or Ceph would be: signed requests, ranged GETs, multi-part uploads.
Its objects live in its memory, so :meth:`pause` and :meth:`resume` (SIGSTOP and
SIGCONT) are how tests make it stop answering and come back with its data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from sdmatlas.errors import SdmAtlasError
from sdmatlas.testing.localpg import _free_port


class LocalS3Error(SdmAtlasError):
    """The S3 test server could not be started."""


@dataclass
class LocalS3:
    port: int = field(default_factory=_free_port)
    key: str = "sdmatlas-test"
    secret: str = "sdmatlas-test-secret"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, timeout: float = 1.0) -> dict[str, Any]:
        """s3fs options for this server; short timeouts make a stopped server an error
        within seconds (s3fs still retries a timeout 5 times; production keeps the
        defaults)."""
        return {
            "endpoint_url": self.endpoint,
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"region_name": "eu-west-1"},
            "config_kwargs": {
                "connect_timeout": timeout,
                "read_timeout": timeout,
                "retries": {"max_attempts": 1},
            },
        }

    def start(self, wait: float = 30.0) -> LocalS3:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalS3Error(f"moto.server exited with {self._proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise LocalS3Error(f"moto.server did not answer on port {self.port} in {wait} s")

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if needed); returns ``s3://name``."""
        import s3fs

        fs = s3fs.S3FileSystem(**self.storage_options(), skip_instance_cache=True)
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def pause(self) -> None:
        """Stop the server answering (SIGSTOP): requests hang until :meth:`resume`."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
