"""`flotilla drill`'s bookkeeping (deploy/drill.py) on synthetic views of the cluster: which
containers the drill affects, when each runs elsewhere, duplicates, losses and the report."""

from __future__ import annotations

import json

from deploy.drill import Copy, DrillReport, Tally, copies_from_ps

POLICY = {"com.docker.swarm.reschedule-policies": '["on-node-failure"]'}


def row(name: str, node: str, sid: str, cid: str, state: str = "running", **labels: str) -> dict:
    return {
        "Id": cid,
        "Names": [f"/{node}/{name}"],
        "State": state,
        "Status": "Up 3 seconds" if state == "running" else "Exited (0) 1 second ago",
        "Labels": {**POLICY, "com.docker.swarm.id": sid, **labels},
    }


def test_copies_from_ps_keeps_reschedulable_containers_only() -> None:
    rows = [
        row("web", "node-1", "s1", "c1"),
        row("db", "node-1", "s2", "c2", state="exited"),
        {"Id": "c3", "Names": ["/node-1/plain"], "State": "running", "Labels": {}},
        {
            "Id": "c4",
            "Names": ["/node-1/off"],
            "State": "running",
            "Labels": {"com.docker.swarm.reschedule-policies": '["off"]'},
        },
    ]
    down = {**row("api", "node-2", "s5", "c5"), "Status": "Host Down"}  # keeps State running
    assert copies_from_ps([*rows, down]) == [
        Copy("s1", "web", "node-1", "c1", True),
        Copy("s2", "db", "node-1", "c2", False),
        Copy("s5", "api", "node-2", "c5", False),
    ]


def test_tally_times_moves_and_counts_duplicates_and_losses() -> None:
    before = copies_from_ps(
        [
            row("a", "node-1", "s1", "c1"),
            row("b", "node-1", "s2", "c2"),
            row("c", "node-2", "s3", "c3"),  # not on the failed node: not affected
        ]
    )
    report = DrillReport("kill", "node-1", "dev", None)
    tally = Tally(report, before)
    assert [m.name for m in report.containers] == ["a", "b"]
    tally.see_registered(True, 1.0)
    tally.see_copies(before, 1.0)
    assert not tally.settled()
    tally.see_registered(False, 3.2)
    tally.see_registered(False, 3.3)
    moved = copies_from_ps([row("a", "node-2", "s1", "c9"), row("a", "node-1", "s1", "c1")])
    tally.see_copies(moved, 4.1)  # s1 runs on node-2 while the manager still lists node-1's
    assert report.detection_s == 3.2
    assert report.containers[0].after_s == 4.1 and report.containers[0].to_node == "node-2"
    assert report.duplicates == 1 and Tally.doubled_now(moved)
    assert not tally.settled()
    tally.finish(copies_from_ps([row("a", "node-2", "s1", "c9")]))
    assert report.lost == 1  # s2 never ran anywhere else


def test_report_table_and_json() -> None:
    report = DrillReport("crash", "node-1", "dev", None, detection_s=3.25)
    tally = Tally(report, copies_from_ps([row("web", "node-1", "s1abcdef012345", "c1")]))
    tally.see_copies(copies_from_ps([row("web", "node-0", "s1abcdef012345", "c2")]), 4.5)
    report.healed = True
    lines = report.lines()
    assert lines[0] == "drill crash node-1 (via dev): detection 3.25s"
    assert lines[2].split() == ["web", "s1abcdef0123", "node-1", "node-0", "4.50s"]
    assert lines[-1] == "duplicates 0  lost 0  healed yes"
    data = json.loads(report.as_json())
    assert data["containers"][0]["after_s"] == 4.5 and data["detection_s"] == 3.25
