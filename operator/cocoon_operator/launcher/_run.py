"""Start, record, supervise and stop one worker VM (the I/O around :mod:`._plan`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cocoon_operator.api.instance import InstanceSlot
from cocoon_operator.launcher._cocoon import (
    FAKE_TON_CONFIG,
    GLOBAL_CONFIG,
    IMAGE_FILES,
    PERSISTENT_DISK_BYTES,
    RUNTIME_VARS,
    SPEC_FAKE_TON,
    SPEC_WORKER,
    CocoonConfigError,
    ModelImage,
    QemuInputs,
    WorkerConf,
    fake_ton_init,
    fake_ton_service,
    kernel_cmdline,
    merge_runtime_vars,
    parse_worker_conf,
    read_ini,
    runtime_vars,
)
from cocoon_operator.launcher._controlrelay import ControlRelay
from cocoon_operator.launcher._health import (
    GuestHealth,
    HealthError,
    guest_address,
    read_guest_health,
)
from cocoon_operator.launcher._healthfile import (
    health_file_path,
    is_health_file,
    write_health_file,
)
from cocoon_operator.launcher._plan import (
    FORWARD_ADDRESS,
    STATE_LOCK,
    LauncherKeys,
    LaunchError,
    LaunchPlan,
    disks_to_remove,
    identity_of_image,
    measured_identity,
    operator_argv,
    persistent_image,
    process_name,
    resolve_node,
)
from cocoon_operator.launcher._quotefile import (
    FileQuote,
    is_quote_file,
    quote_file_path,
    write_quote_file,
)
from cocoon_operator.launcher._quoterelay import (
    HOST_QGS,
    Address,
    CapturedQuote,
    InetAddress,
    QuoteStore,
    RelayThread,
    UnixAddress,
    parse_address,
    relay_socket_path,
    start_quote_relay,
)
from cocoon_operator.launcher._spectree import SpecTreeError, spec_tree_hash
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from cocoon_operator.ton.errors import AddressError, NodeWalletKeyError
from cocoon_operator.workerapi._signing import ControlKeyError, parse_public_key

log = logging.getLogger("cocoon_operator.launcher")

POWERDOWN_SECONDS = 240.0  # within the pod's 300 s grace: the guest drains first
UP_POLL_SECONDS = 10.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_digests(image_dir: Path, expected: Mapping[str, str | None]) -> dict[str, str]:
    """The SHA-256 of each of the release's image files, checked where a digest is given.

    All five files decide a measurement (OVMF.fd: MRTD; image.vmlinuz: RTMR1;
    image.initrd and image.cmdline: RTMR2; image.img through the cmdline's
    ``roothash=``), so a file that is not the release's starts no VM: the TD would
    not measure as the allow-listed image hash, and its disk would not unseal.
    """
    digests: dict[str, str] = {}
    for name in IMAGE_FILES:
        path = image_dir / name
        if not path.is_file():
            raise LaunchError(f"release file {name} not found at {path}")
        got = sha256_file(path)
        want = expected.get(name)
        if want is not None and got != want:
            raise LaunchError(
                f"release file {name} ({path}) has sha256 {got}, the spec expects {want}:"
                " the VM would not measure as the release"
            )
        digests[name] = got
    return digests


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        # The error names the file, never its content.
        raise LaunchError(f"cannot read {path}: {exc.strerror}") from None


def _copy(source: Path, target: Path, what: str) -> None:
    if not source.is_file():
        raise LaunchError(f"{what} not found: {source}")
    shutil.copy(source, target)


def prepare_spec(release: Path, conf: WorkerConf, model: ModelImage, dest: Path) -> None:
    """Write the spec share exactly as cocoon-launch's ``prepare_spec`` does
    (cocoon-launch:399-461): a copy of the release's ``spec/spec-worker``, the TON
    configs, fake-TON's changes, and ``runtime/runtime.vars`` (the secrets; outside
    the measured tree, reprodebian/cocoon-init/cocoon-prepare-spec:18).
    """
    source = release / SPEC_WORKER
    if not source.is_dir():
        raise LaunchError(f"release spec not found: {source}")
    shutil.copytree(source, dest)  # :405
    base = conf.ton_config_base_in(release)
    if base is not None:
        _copy(base, dest / GLOBAL_CONFIG, "ton_config_base")  # :408-411
    full = conf.ton_config_in(release)
    if full is not None:
        (dest / "runtime").mkdir(exist_ok=True)  # :414-418
        _copy(full, dest / "runtime" / GLOBAL_CONFIG, "ton_config")
    vars_file = dest / RUNTIME_VARS
    vars_file.parent.mkdir(exist_ok=True)
    # The secrets: readable by QEMU (root) only; the mode is not measured.
    os.close(os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    if conf.fake_ton:  # :421-437
        fake = release / SPEC_FAKE_TON
        _copy(fake / FAKE_TON_CONFIG, dest / FAKE_TON_CONFIG, "fake-TON config")
        with vars_file.open("a") as out:
            out.write((fake / "runtime.vars").read_text())
        init = dest / "init"
        if init.exists():
            init.write_text(fake_ton_init(init.read_text()))
    existing = vars_file.read_text() or None
    vars_file.write_text(merge_runtime_vars(existing, runtime_vars(conf, model)))
    if conf.fake_ton:
        for unit in sorted(dest.glob("*.service")):  # adjust_runner_services, :334-352
            unit.write_text(fake_ton_service(unit.read_text()))


def vm_running(proc_root: Path, pid: int, instance: int) -> bool:
    """Whether ``pid`` is alive and is the QEMU of ``instance`` (not a reused pid)."""
    try:
        cmdline = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return process_name(instance).encode() in cmdline


def state_file(state_dir: Path, instance: int) -> Path:
    return state_dir / f"instance-{instance}.json"


def node_wallet(conf: WorkerConf) -> str | None:
    """The node wallet address COCOON's runner will use (raw form), derived offline from
    the key and owner exactly as ``CocoonWallet`` does (``ton/cocoonwallet.py``); None
    without a key. A key COCOON would refuse starts no VM; the error never holds it."""
    if conf.node_wallet_key is None:
        return None
    try:
        return node_wallet_address_of_key(conf.node_wallet_key, conf.owner_address).to_raw()
    except NodeWalletKeyError as exc:
        raise LaunchError(f"[node] node_wallet_key: {exc}") from None
    except (AddressError, ValueError) as exc:
        raise LaunchError(f"[node] owner_address: {exc}") from None


def write_state(
    state_dir: Path,
    conf: WorkerConf,
    pid: int,
    env: Mapping[str, str],
    *,
    persistent: str,
    wallet: str | None = None,
    model_verity: str | None = None,
) -> Path:
    """Tell the node agent which pod this VM belongs to, and which model it reads (the
    agent's gc keeps it): atomically, write then rename."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "instance": conf.instance,
        "namespace": env.get("POD_NAMESPACE", ""),
        "worker": env.get("COCOON_WORKER", ""),
        "pod": env.get("POD_NAME", ""),
        "podUid": env.get("POD_UID", ""),
        "pci": conf.gpu or "",
        "pid": pid,
        "persistent": persistent,
        "nodeWallet": wallet,
        "modelVerity": model_verity,
    }
    path = state_file(state_dir, conf.instance)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def identities_in_use(state_dir: Path, proc_root: Path = Path("/proc")) -> frozenset[str]:
    """The persistent-disk identities of the VMs running on this node (from their records)."""
    used: set[str] = set()
    for record in state_dir.glob("instance-*.json"):
        if is_quote_file(record.name) or is_health_file(record.name):
            continue
        try:
            data = json.loads(record.read_text())
            pid, instance = int(data["pid"]), int(data["instance"])
            name = Path(str(data.get("persistent", ""))).name
        except (OSError, ValueError, KeyError, TypeError):
            continue
        identity = identity_of_image(name)
        if identity is not None and vm_running(proc_root, pid, instance):
            used.add(identity)
    return frozenset(used)


def collect_disks(directory: Path, current: str, in_use: frozenset[str], up: bool) -> list[str]:
    """Remove the worker's persistent disks no VM can open any more (see disks_to_remove)."""
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    removed = disks_to_remove(names, current, in_use, up)
    for name in removed:
        (directory / name).unlink(missing_ok=True)
        log.info("removed persistent disk %s: sealed to another release", name)
    return removed


def worker_up(port: int, timeout: float = 2.0) -> bool:
    """Whether the guest's runner answers its stats on the forwarded port.

    COCOON's worker answers ``/jsonstats`` only once its runner has initialised
    (every path is 400 before, runners/worker/WorkerRunner.cpp), which it does from
    a guest that booted and opened its persistent disk: the sign that this VM's
    disk is the one that counts now.
    """
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/jsonstats", timeout=timeout
        ) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def qmp_powerdown(qmp: Path, timeout: float = 5.0) -> bool:
    """Ask the guest to shut down (ACPI), as a person pressing the power button."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(qmp))
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
                reader.readline()
    except OSError as exc:
        log.warning("QMP %s: %s", qmp, exc)
        return False
    return True


@dataclass(frozen=True)
class Prepared:
    """Everything a launch needs, checked: the plan, where its private files live."""

    plan: LaunchPlan
    release: Path
    model: ModelImage
    digests: dict[str, str]
    identity: str
    persistent_dir: Path | None
    qgs_upstream: Address = HOST_QGS
    node_wallet: str | None = None
    # The guest's health monitor (COCOON's health-monitor, vsock port 9999), or None.
    health_monitor: Address | None = None
    health_seconds: float = 60.0


@dataclass(frozen=True)
class ControlAccess:
    """Who may use the worker's controls: the operator's public key, for this pod's UID,
    on the relay's address (``launcher/_controlrelay.py``)."""

    public_key: Ed25519PublicKey
    audience: str
    listen: InetAddress


def control_access(
    public_key: str | None,
    env: Mapping[str, str],
    instance: int,
    listen_host: str,
    port: int | None = None,
) -> ControlAccess:
    """The relay's settings from the launcher's flags and the pod's env; a launcher
    without them starts no VM (its worker's controls would be out of anyone's reach,
    or, worse, published)."""
    if not public_key:
        raise LaunchError("--control-public-key is required: the operator's control key")
    try:
        key = parse_public_key(public_key)
    except ControlKeyError as exc:
        raise LaunchError(f"--control-public-key: {exc}") from None
    audience = env.get("POD_UID", "")
    if not audience:
        raise LaunchError(
            "$POD_UID is not set: the control relay accepts requests for this pod only"
        )
    if port is None:
        port = InstanceSlot(instance).control_port
    return ControlAccess(key, audience, InetAddress(listen_host, port))


def start_control_relay(plan: LaunchPlan, access: ControlAccess) -> RelayThread:
    """The worker's port, as the operator alone may use it: signed requests from the
    relay's published port to QEMU's forward on the pod's loopback."""
    relay = ControlRelay(
        vm=process_name(plan.conf.instance),
        listen=access.listen,
        upstream=InetAddress(FORWARD_ADDRESS, plan.conf.host_http_port),
        public_key=access.public_key,
        audience=access.audience,
    )
    runner = RelayThread(relay)
    runner.start()
    return runner


def quote_recorder(
    store: QuoteStore, state_dir: Path, instance: int, pod_uid: str
) -> Callable[[CapturedQuote], None]:
    """The relay's capture callback: keep the quote, and rewrite the VM's quotes file
    (the latest few, atomically) for the node agent (``launcher/_quotefile.py``)."""

    def capture(captured: CapturedQuote) -> None:
        store.add(captured)
        kept = [FileQuote(q.quote, q.at, q.report_data) for q in store.latest(captured.vm)]
        write_quote_file(state_dir, instance, pod_uid, kept)

    return capture


def hold_state_lock(state_dir: Path) -> int:
    """Take the state directory's lock (:data:`STATE_LOCK`) for this launcher's life: the
    node agent's janitor never removes a directory whose lock is held. Another live
    launcher on the same directory (the same pod's, which cannot be) is an error."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / STATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LaunchError(f"{state_dir / STATE_LOCK} is held by another launcher") from None
    return fd


class HealthPoller:
    """Read the guest's measurements from its health monitor every ``every`` seconds
    and keep the latest answer in the VM's health file (``launcher/_healthfile.py``).

    Bounded: one short connection, :data:`~._health.DEFAULT_TIMEOUT_SECONDS` in all,
    an answer of at most 64 KiB. A monitor that does not answer leaves the file as
    it was (absent until the first answer): the operator then says the host has no
    reading, which is not a failure.
    """

    def __init__(
        self,
        address: Address,
        state_dir: Path,
        instance: int,
        pod_uid: str,
        *,
        every: float,
        read: Callable[[Address], GuestHealth] = read_guest_health,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self._state_dir = state_dir
        self._instance = instance
        self._pod_uid = pod_uid
        self._every = every
        self._read = read
        self._clock = clock
        self._next = clock() + min(every, 30.0)  # the guest needs a moment to boot
        self._failed = False

    def due(self) -> bool:
        return self._clock() >= self._next

    def poll(self, now: datetime | None = None) -> GuestHealth | None:
        """One reading, written to the VM's health file; None when the monitor did not answer."""
        self._next = self._clock() + self._every
        try:
            health = self._read(self.address)
        except HealthError as exc:
            if not self._failed:
                log.info("guest health monitor at %s: %s", self.address, exc)
            self._failed = True
            return None
        self._failed = False
        write_health_file(
            self._state_dir,
            self._instance,
            self._pod_uid,
            now or datetime.now(UTC),
            health,
        )
        return health


def _clear_sidecars(state_dir: Path, instance: int) -> tuple[Path, Path]:
    """Remove the VM's quotes and health files (the agent stops reporting them)."""
    files = (quote_file_path(state_dir, instance), health_file_path(state_dir, instance))
    for f in files:
        f.unlink(missing_ok=True)
    return files


def health_poller(prepared: Prepared, state_dir: Path) -> HealthPoller | None:
    """The VM's health-monitor reader, bound to its instance and pod; None when off."""
    if prepared.health_monitor is None:
        return None
    return HealthPoller(
        prepared.health_monitor,
        state_dir,
        prepared.plan.conf.instance,
        os.environ.get("POD_UID", ""),
        every=prepared.health_seconds,
    )


def supervise(
    argv: list[str],
    state_dir: Path,
    prepared: Prepared,
    *,
    grace: float,
    keep_fds: tuple[int, ...] = (),
    control: ControlAccess | None = None,
) -> int:
    """Run QEMU until it exits; on SIGTERM power the guest down, then stop QEMU.

    ``keep_fds``: descriptors QEMU inherits (the state lock: held while QEMU lives).
    ``control``: the control relay's key and pod (none: no relay, e.g. in tests)."""
    plan = prepared.plan
    quotes = QuoteStore()
    relay = None
    # Listening before QEMU: a port already taken stops the launch here.
    control_relay = start_control_relay(plan, control) if control is not None else None
    # A previous VM's quotes and health readings on this instance are not this VM's.
    _clear_sidecars(state_dir, plan.conf.instance)
    health = health_poller(prepared, state_dir)
    if plan.qgs_socket is not None:
        # Listening before QEMU starts: the guest asks for its first quote at boot.
        state_dir.mkdir(parents=True, exist_ok=True)
        relay = start_quote_relay(
            vm=process_name(plan.conf.instance),
            listen=UnixAddress(plan.qgs_socket),
            capture=quote_recorder(
                quotes, state_dir, plan.conf.instance, os.environ.get("POD_UID", "")
            ),
            upstream=prepared.qgs_upstream,
        )
    proc = subprocess.Popen(argv, pass_fds=keep_fds)
    path = write_state(
        state_dir,
        plan.conf,
        proc.pid,
        os.environ,
        persistent=plan.inputs.persistent,
        wallet=prepared.node_wallet,
        model_verity=prepared.model.verity_hash,
    )
    stopping: list[float] = []
    collected = prepared.persistent_dir is None
    next_poll = time.monotonic() + UP_POLL_SECONDS

    def on_term(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            log.info("stopping: asking the guest to power down (up to %.0f s)", grace)
            if not qmp_powerdown(plan.qmp_socket):
                proc.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=0.5)
            now = time.monotonic()
            if health is not None and not stopping and health.due():
                health.poll()
            if not collected and not stopping and now >= next_poll:
                next_poll = now + UP_POLL_SECONDS
                if worker_up(plan.conf.host_http_port) and prepared.persistent_dir is not None:
                    in_use = identities_in_use(state_dir)
                    collect_disks(prepared.persistent_dir, prepared.identity, in_use, up=True)
                    collected = True
            if stopping and now - stopping[0] > grace:
                log.warning("the guest did not power down in %.0f s: stopping QEMU", grace)
                proc.terminate()
                try:
                    return proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
    finally:
        # Only once QEMU is gone (and with it the GPU): the agent stops listing the VM,
        # and the VM's spec share (its secrets) goes with it.
        if proc.poll() is not None:
            _after_qemu(relay, control_relay, state_dir, plan, path)


def _after_qemu(
    relay: RelayThread | None,
    control_relay: RelayThread | None,
    state_dir: Path,
    plan: LaunchPlan,
    record: Path,
) -> None:
    """QEMU has exited: stop its relays, drop its quotes, health and record, and remove
    its spec share (its secrets)."""
    for running in (relay, control_relay):
        if running is not None:
            running.stop()
    _clear_sidecars(state_dir, plan.conf.instance)
    record.unlink(missing_ok=True)
    shutil.rmtree(plan.inputs.spec_dir.parent, ignore_errors=True)


def health_monitor_address(value: str, instance: int) -> Address | None:
    """``--health-monitor``: ``guest`` (the VM's own CID, port 9999), an address, or ``off``."""
    if value == "off":
        return None
    if value == "guest":
        return guest_address(instance)
    return parse_address(value)


def _expected(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "OVMF.fd": args.expect_ovmf_sha256,
        "image.img": args.expect_image_sha256,
        "image.vmlinuz": args.expect_kernel_sha256,
        "image.initrd": args.expect_initrd_sha256,
        "image.cmdline": args.expect_cmdline_sha256,
    }


def read_worker_conf(
    path: Path,
    env: Mapping[str, str],
    instance: int | None,
    read_secret: Callable[[str], str] = _read_secret,
) -> tuple[WorkerConf, LauncherKeys]:
    """The worker.conf with its ``[launcher]`` references resolved (secrets, GPU)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LaunchError(f"cannot read {path}: {exc.strerror}") from None
    try:
        ini = read_ini(text, str(path))
        if not ini.has_section("node"):
            raise LaunchError(f"{path}: no [node] section")
        keys = LauncherKeys.from_section(
            dict(ini["launcher"]) if ini.has_section("launcher") else None
        )
        node = resolve_node(dict(ini["node"]), keys, env, read_secret)
        return parse_worker_conf(node, instance=instance, where=str(path)), keys
    except CocoonConfigError as exc:
        raise LaunchError(str(exc)) from None


def prepare(args: argparse.Namespace, env: Mapping[str, str], spec_dir: Path) -> Prepared:
    """Check the release, write the spec share into ``spec_dir``, and plan QEMU's argv."""
    return prepare_launch(
        Path(args.config),
        Path(args.release),
        spec_dir,
        env=env,
        instance=args.instance,
        model_dir=args.model_dir,
        expected=_expected(args),
    )


def prepare_launch(
    config: Path,
    release: Path,
    spec_dir: Path,
    *,
    env: Mapping[str, str],
    instance: int | None = None,
    model_dir: str | None = None,
    expected: Mapping[str, str | None] | None = None,
    read_secret: Callable[[str], str] = _read_secret,
) -> Prepared:
    """What ``launch`` does before QEMU, for the launcher and the local stack's simulator."""
    conf, keys = read_worker_conf(config, env, instance, read_secret)
    return prepare_conf(conf, keys, release, spec_dir, model_dir=model_dir, expected=expected)


def prepare_conf(
    conf: WorkerConf,
    keys: LauncherKeys,
    release: Path,
    spec_dir: Path,
    *,
    model_dir: str | None = None,
    expected: Mapping[str, str | None] | None = None,
) -> Prepared:
    """:func:`prepare_launch` for a worker.conf already read (its secrets resolved once)."""
    wallet = node_wallet(conf)
    image_dir = conf.image_dir_in(release)
    digests = release_digests(image_dir, expected or {})
    models = Path(model_dir or keys.model_dir or ".")
    try:
        model = ModelImage.parse(conf.model, "")
    except CocoonConfigError as exc:
        raise LaunchError(f"[node] model: {exc}") from None
    model = dataclasses.replace(model, tar_path=str(models / f"{model.verity_hash}.tar"))
    if spec_dir.exists():
        raise LaunchError(f"{spec_dir} exists: the spec share is written afresh")
    prepare_spec(release, conf, model, spec_dir)
    cmdline = kernel_cmdline((image_dir / "image.cmdline").read_text(), conf)
    try:
        identity = measured_identity(digests, cmdline, spec_tree_hash(spec_dir))
    except SpecTreeError as exc:
        raise LaunchError(f"the guest would refuse its spec: {exc}") from None
    persistent_dir = Path(keys.persistent_dir) if keys.persistent_dir else None
    if conf.persistent is None and persistent_dir is not None:
        persistent = persistent_image(str(persistent_dir), identity)
    else:
        persistent = conf.persistent_path()
    inputs = QemuInputs(
        image_dir=image_dir,
        cmdline=cmdline,
        persistent=persistent,
        spec_dir=spec_dir,
        model=model,
    )
    qmp = spec_dir.parent / f"instance-{conf.instance}.qmp"
    qgs = relay_socket_path(spec_dir.parent, conf.instance)
    return Prepared(
        plan=LaunchPlan(conf=conf, inputs=inputs, qmp_socket=qmp, qgs_socket=qgs),
        release=release,
        model=model,
        digests=digests,
        identity=identity,
        persistent_dir=persistent_dir if conf.persistent is None else None,
        node_wallet=wallet,
    )


def _check_model(model: ModelImage) -> None:
    for path in (model.tar_path, model.verity_path):
        if not Path(path).is_file():
            raise LaunchError(
                f"model image {path} not found (model {model.name}@{model.commit}:"
                f"{model.verity_hash})"
            )


def cmd_launch(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.print_only or args.prepare_only:
        return _dry(args)
    state_dir = Path(args.state_dir)
    private: Path | None = None
    lock: int | None = None
    try:
        conf, keys = read_worker_conf(Path(args.config), os.environ, args.instance)
        previous = state_file(state_dir, conf.instance)
        if previous.exists():
            pid = int(json.loads(previous.read_text()).get("pid", 0))
            if vm_running(Path("/proc"), pid, conf.instance):
                # A force-deleted pod's VM (the agent reports it): a second VM
                # of this instance would fight it for the GPU, ports and CID.
                raise LaunchError(
                    f"the VM of instance {conf.instance} (pid {pid}) still runs on"
                    " this node without its pod; stop it first"
                )
            previous.unlink()  # left by a launcher that died with its VM
        # The pod's own directory (desired/launcher.py): held for the VM's life, so
        # the node agent's janitor never removes it under a running VM.
        lock = hold_state_lock(state_dir)
        # A directory of this launcher's own, private to root, removed when QEMU is gone.
        private = state_dir / f"vm-{conf.instance}"
        shutil.rmtree(private, ignore_errors=True)
        private.mkdir(mode=0o700, parents=True)
        prepared = prepare_conf(
            conf,
            keys,
            Path(args.release),
            private / "spec",
            model_dir=args.model_dir,
            expected=_expected(args),
        )
        _check_model(prepared.model)
        persistent = Path(prepared.plan.inputs.persistent)
        if not persistent.exists():
            persistent.parent.mkdir(parents=True, exist_ok=True)
            with persistent.open("wb") as f:
                f.truncate(PERSISTENT_DISK_BYTES)  # sparse, as `truncate --size=100g`
        try:
            upstream = parse_address(args.quote_service)
        except ValueError as exc:
            raise LaunchError(f"--quote-service: {exc}") from None
        try:
            monitor = health_monitor_address(args.health_monitor, conf.instance)
        except ValueError as exc:
            raise LaunchError(f"--health-monitor: {exc}") from None
        prepared = dataclasses.replace(
            prepared,
            qgs_upstream=upstream,
            health_monitor=monitor,
            health_seconds=max(5.0, args.health_seconds),
        )
        control = control_access(
            args.control_public_key,
            os.environ,
            conf.instance,
            args.control_listen,
            args.control_port,
        )
        argv = operator_argv(prepared.plan, shutil.which(args.qemu) or args.qemu)
    except LaunchError as exc:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        if lock is not None:
            os.close(lock)  # nothing started: the directory is free again
        print(f"launch: {exc}", file=sys.stderr)
        return 1
    conf = prepared.plan.conf
    log.info(
        "starting instance %d: GPU %s, model %s, persistent disk %s",
        conf.instance,
        conf.gpu or "none",
        conf.model,
        prepared.plan.inputs.persistent,
    )
    return supervise(
        argv,
        state_dir,
        prepared,
        grace=args.powerdown_seconds,
        keep_fds=(lock,),
        control=control,
    )


def _dry(args: argparse.Namespace) -> int:
    """``--print-only`` / ``--prepare-only DIR``: what a launch would do, starting nothing.

    Neither needs KVM, a GPU or the model's files; digests are checked when given.
    """
    try:
        if args.prepare_only:
            prepared = prepare(args, os.environ, Path(args.prepare_only))
        else:
            with tempfile.TemporaryDirectory(prefix="cocoon-spec-") as tmp:
                prepared = prepare(args, os.environ, Path(tmp) / "spec")
    except LaunchError as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 1
    if args.print_only:
        for arg in operator_argv(prepared.plan, args.qemu):
            print(arg)
    return 0
