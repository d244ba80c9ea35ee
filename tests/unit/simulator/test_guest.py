"""The simulated guest boots only from what a COCOON guest needs: the disks by serial,
an executable /spec/init and the runtime vars, all as the real launcher prepared them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocoon_operator.desired.config import GPU_ENV, InstanceSlot, worker_config
from cocoon_operator.launcher import operator_argv
from cocoon_operator.launcher._run import Prepared, prepare_launch
from cocoon_operator.simulator._guest import GuestBootError, boot
from cocoon_operator.simulator._release import write_release
from cocoon_operator.ton.cocoonwallet import node_wallet_address_of_key
from tests.unit.helpers import spec

KEY = "c2ltdWxhdGVkLW5vZGUtd2FsbGV0LWtleS0wMDAwMDA="


def prepared(tmp_path: Path) -> Prepared:
    release = write_release(tmp_path / "release")
    conf = tmp_path / "worker.conf"
    conf.write_text(worker_config(spec(coefficient=1250), InstanceSlot(2)))
    return prepare_launch(
        conf,
        release,
        tmp_path / "vm" / "spec",
        env={GPU_ENV: "0000:1b:00.0"},
        read_secret=lambda path: KEY,
    )


def test_the_guest_runs_with_what_the_launcher_wrote_into_the_spec_share(tmp_path: Path) -> None:
    plan = prepared(tmp_path)
    guest = boot(operator_argv(plan.plan))
    s = spec()
    assert guest.model == s.model.cocoon_id
    assert (guest.owner_address, guest.coefficient) == (s.owner_address, 1250)
    assert guest.node_wallet_key == KEY and guest.fake_ton  # the local network
    assert plan.node_wallet == node_wallet_address_of_key(KEY, s.owner_address).to_raw()


@pytest.mark.parametrize("serial", ["root", "persistent", "model-tar", "model-tar-verity"])
def test_a_missing_disk_stops_the_guest_naming_its_serial(tmp_path: Path, serial: str) -> None:
    argv = [
        a.replace(f",serial={serial}", ",serial=other")
        for a in operator_argv(prepared(tmp_path).plan)
    ]
    with pytest.raises(GuestBootError, match=f"serial '{serial}'"):
        boot(argv)


def test_a_spec_without_init_or_runtime_vars_stops_the_guest(tmp_path: Path) -> None:
    plan = prepared(tmp_path)
    argv = operator_argv(plan.plan)
    (plan.plan.inputs.spec_dir / "runtime" / "runtime.vars").write_text("OWNER_ADDRESS=x\n")
    with pytest.raises(GuestBootError, match="NODE_WALLET_KEY"):
        boot(argv)
    (plan.plan.inputs.spec_dir / "init").unlink()
    with pytest.raises(GuestBootError, match="/spec/init"):
        boot(argv)
    without_share = [a for a in argv if "mount_tag=spec" not in a]
    with pytest.raises(GuestBootError, match="no /spec"):
        boot(without_share)
