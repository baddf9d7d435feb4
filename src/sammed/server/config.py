"""Server settings, checked once at start-up so a bad combination never reaches a socket."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from sammed.errors import SammedError

MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ServerConfigError(SammedError):
    """The server cannot start with these settings (e.g. a public address without a token)."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


SESSION_IMAGE_COPIES = 3  # the decoded array, Session's SimpleITK copy, one more for replies being encoded
SESSION_BYTES_PER_VOXEL = 4  # label map / masks built for replies (1-2 bytes each)


def session_charge(voxels: int, image_bytes: int) -> int:
    """Memory one session of this image may hold: what the memory budget counts, per session.

    A session keeps the decoded voxels twice (NumPy and SimpleITK); replies build a label map
    or mask and a NIfTI copy while they are encoded. Charging for that peak, not the steady
    state, keeps the budget an upper bound of what the sessions really use.
    """
    return SESSION_IMAGE_COPIES * image_bytes + SESSION_BYTES_PER_VOXEL * voxels


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_app`` needs; ``validated()`` enforces the security rules.

    ``allowed_hosts`` guards against DNS rebinding: without a token, only requests whose Host
    header names the loopback interface are served.
    """

    model: str = "sam-med3d-turbo"
    checkpoint: Path | None = None
    trust_checkpoint: bool = False
    allow_random_weights: bool = False
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    data_root: Path | None = None
    token: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_image_bytes: int = 512 * 1024 * 1024  # decoded voxels x bytes per voxel, per image
    memory_budget_bytes: int = 8 * 1024 * 1024 * 1024  # all sessions' charges together
    session_timeout_s: float = 30 * 60
    max_sessions: int = 32
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = field(default=())

    def validated(self) -> "ServerConfig":
        if not is_loopback(self.host) and not self.token:
            raise ServerConfigError(
                f"--host {self.host} makes the server reachable from other machines: give --token "
                "(every request must then carry it)"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ServerConfigError(
                f"--token must be at least {MIN_TOKEN_LENGTH} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if self.checkpoint is None and not self.allow_random_weights:
            raise ServerConfigError(
                "--checkpoint is required (or --allow-random-weights to try the server with an untrained model)"
            )
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ServerConfigError(f"--data-root '{self.data_root}' is not a folder")
        limits = (self.max_upload_bytes, self.max_image_bytes, self.memory_budget_bytes, self.max_sessions)
        if min(limits) <= 0 or not 0 < self.session_timeout_s < float("inf"):
            raise ServerConfigError(
                "--max-upload-mb, --max-image-mb, --memory-budget-mb, --max-sessions and --session-timeout must be positive"
            )
        if not 0 < self.port < 65536:
            raise ServerConfigError(f"--port must be 1 to 65535, not {self.port}")
        largest = self.largest_session_charge
        if largest > self.memory_budget_bytes:
            raise ServerConfigError(
                f"--memory-budget-mb {self.memory_budget_bytes / 2**20:.0f} cannot hold one session of the largest "
                f"accepted image (--max-image-mb {self.max_image_bytes / 2**20:.0f} needs {largest / 2**20:.0f} MiB)"
            )
        return self

    @property
    def largest_session_charge(self) -> int:
        """The charge of a session of the largest accepted image (1 byte per voxel: the most voxels)."""
        return session_charge(self.max_image_bytes, self.max_image_bytes)

    @property
    def hosts_to_accept(self) -> tuple[str, ...]:
        """Host header values served; '*' once a token protects every request."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.token:
            return ("*",)
        return ("127.0.0.1", "localhost", "[::1]", "::1")
