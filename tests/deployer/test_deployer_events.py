"""Deployment events (issue 12, part 3), through the real CLI in process against the emulated AWS: EventBridge
(a bus, a rule, an SQS target) and SNS (a topic with an SQS subscription), read back from the queues; JSON
lines on stderr; a sink that fails never fails the command. The transition table itself is unit-tested below."""

import json

import pytest

from agent import contract
from deployer import events
from deployer.model import Record
from tests.deployer.test_deployer_bakewatch import ALARM, baking, kill_mid_bake, lock, once_baking, put_alarm, set_state
from tests.helpers import expect_exit

SERVICE = "demo"


def ok(proc):
    expect_exit(proc, 0)
    return proc


class Sinks:
    """A bus whose rule sends every `bluegreen` event to one queue, and a topic with another queue subscribed."""

    def __init__(self, session, bus="deploys", topic="deploys"):
        self.events, self.sqs, self.sns = (session.client(n) for n in ("events", "sqs", "sns"))
        self.bus = bus
        self.events.create_event_bus(Name=bus)
        self.bus_queue = self._queue(f"{bus}-bus")
        self.events.put_rule(Name="all-bluegreen", EventBusName=bus, EventPattern=json.dumps({"source": ["bluegreen"]}))
        self.events.put_targets(Rule="all-bluegreen", EventBusName=bus,
                                Targets=[{"Id": "queue", "Arn": self._arn(self.bus_queue)}])
        self.topic = self.sns.create_topic(Name=topic)["TopicArn"]
        self.topic_queue = self._queue(f"{topic}-topic")
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=self._arn(self.topic_queue))

    def _queue(self, name):
        return self.sqs.create_queue(QueueName=name)["QueueUrl"]

    def _arn(self, url):
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def _drain(self, url):
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            messages = got.get("Messages", [])
            if not messages:
                return out
            out += messages
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])

    def from_bus(self):
        """The EventBridge events that reached the bus's queue: (detail-type, detail), in the order sent."""
        found = [json.loads(m["Body"]) for m in self._drain(self.bus_queue)]
        assert all(e["source"] == "bluegreen" for e in found)
        return sorted(found, key=lambda e: e["detail"]["at"])

    def from_topic(self):
        """The SNS notifications that reached the topic's queue: the envelope (with its detail), and attributes."""
        found = []
        for message in self._drain(self.topic_queue):
            note = json.loads(message["Body"])
            envelope = json.loads(note["Message"])
            found.append((envelope, {k: v["Value"] for k, v in note["MessageAttributes"].items()}, note["Subject"]))
        return sorted(found, key=lambda f: f[0]["detail"]["at"])


def json_lines(stderr):
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def types(found):
    return [e["detail-type"] for e in found]


def test_a_cycle_puts_one_event_per_transition_on_the_bus_and_the_topic(make_harness):
    fleet = make_harness(capacity=2)
    sinks = Sinks(fleet.session)
    flags = ("--event-bus", sinks.bus, "--sns-topic", sinks.topic)

    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", *flags))
    deploy = sinks.from_bus()
    assert types(deploy) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED]
    started, launched, flipped = (e["detail"] for e in deploy)
    for d in (started, launched, flipped):
        assert (d["service"], d["action"], d["version"], d["old_version"]) == (SERVICE, "deploy", "2.0", "1.0")
        assert (d["live_color"], d["new_color"], d["holder"], d["reason"]) == ("blue", "green", started["holder"], None)
        assert d["operation"] and d["operation"] == started["operation"]  # the state store's operation id
    assert (started["phase"], launched["phase"], flipped["phase"]) == ("launch", "policies", "flipped")
    assert (launched["previous_phase"], flipped["previous_phase"]) == ("launch", "flip")
    assert launched["durations"]["previous_phase_s"] >= 0 and flipped["durations"]["elapsed_s"] >= 0
    assert [p["phase"] for p in flipped["durations"]["phases"]] == ["launch", "policies", "flip", "flipped"]
    assert "events: EventBridge bus deploys, SNS topic" in out.stderr
    # The same events on the topic, the detail type as a message attribute to filter on.
    topic = sinks.from_topic()
    assert [(env["detail-type"], attrs["event"], attrs["service"]) for env, attrs, _ in topic] == [
        (t, t, SERVICE) for t in types(deploy)]
    assert [env["detail"] for env, _, _ in topic] == [e["detail"] for e in deploy]
    assert topic[0][2] == "bluegreen demo: started"

    ok(fleet.bluegreen("rollback", SERVICE, *flags))
    rollback = sinks.from_bus()
    assert types(rollback) == [contract.EVENT_ROLLED_BACK, contract.EVENT_RESTORED, contract.EVENT_SETTLED]
    rolled, restored, settled = (e["detail"] for e in rollback)
    assert rolled["action"] == "rollback" and rolled["version"] == "2.0" and rolled["old_version"] == "1.0"
    assert rolled["by"] == rolled["holder"] != started["holder"]  # who rolled back (no alarm named a reason)
    assert restored["phase"] == "restored"
    assert settled["result"] == contract.EVENT_ROLLED_BACK and settled["journal"]
    assert [p["phase"] for p in settled["durations"]["phases"]] == ["restore", "retire", "restored"]
    history = json.loads(ok(fleet.bluegreen("history", SERVICE, "--output", "json")).stdout)["entries"]
    assert history[0]["events"] == {"delivered": 4, "failed": 0}  # rolled-back and restored, twice each

    ok(fleet.bluegreen("deploy", SERVICE, "2.0", *flags))
    sinks.from_bus()
    ok(fleet.bluegreen("finalize", SERVICE, *flags))
    finalize = sinks.from_bus()
    assert types(finalize) == [contract.EVENT_STARTED, contract.EVENT_FINALIZED]
    assert finalize[1]["detail"]["action"] == "finalize" and finalize[1]["detail"]["result"] == "finalized"

    # Canary, then rollback: the canary's launch is its `launched`.
    ok(fleet.bluegreen("canary", SERVICE, "3.0", "--count", "1", *flags))
    assert types(sinks.from_bus()) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED]
    ok(fleet.bluegreen("rollback", SERVICE, *flags))
    assert types(sinks.from_bus()) == [contract.EVENT_ROLLED_BACK, contract.EVENT_RESTORED, contract.EVENT_SETTLED]
    sinks.from_topic()

    # A deploy whose launch fails aborts on its own: `aborted`, with the failure as its reason.
    fleet.cloud.configure_faults(vcpu_limit=4)  # blue's two t3.micro already use the account's 4 vCPUs (A15)
    failed = fleet.bluegreen("deploy", SERVICE, "4.0", *flags)
    expect_exit(failed, 1)
    aborted = sinks.from_bus()
    assert types(aborted) == [contract.EVENT_STARTED, contract.EVENT_RESTORED, contract.EVENT_ABORTED]
    end = aborted[-1]["detail"]
    assert end["result"] == "aborted" and end["version"] == "4.0" and "cannot launch its capacity" in end["reason"]


def test_the_groups_tags_name_the_sinks_and_a_flag_overrides_them(make_harness):
    fleet = make_harness(capacity=1)
    tagged, flagged = Sinks(fleet.session, "tagged", "tagged"), Sinks(fleet.session, "flagged", "flagged")
    asg = fleet.session.client("autoscaling")
    asg.create_or_update_tags(Tags=[
        {"ResourceId": fleet.group(c)["AutoScalingGroupName"], "ResourceType": "auto-scaling-group", "Key": key,
         "Value": value, "PropagateAtLaunch": False}
        for c in ("blue", "green")
        for key, value in ((contract.TAG_EVENT_BUS, tagged.bus), (contract.TAG_SNS_TOPIC, tagged.topic))])

    ok(fleet.bluegreen("deploy", SERVICE, "2.0"))
    assert types(tagged.from_bus()) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED]
    assert len(tagged.from_topic()) == 3

    ok(fleet.bluegreen("rollback", SERVICE, "--event-bus", flagged.bus))
    assert types(flagged.from_bus()) == [contract.EVENT_ROLLED_BACK, contract.EVENT_RESTORED, contract.EVENT_SETTLED]
    assert tagged.from_bus() == []  # the flag wins over the tag
    assert len(tagged.from_topic()) == 3  # no --sns-topic: the tag's topic still gets them


def test_groups_naming_different_buses_are_refused_before_anything_changes_but_not_for_rollback(make_harness):
    fleet = make_harness(capacity=1)
    asg = fleet.session.client("autoscaling")
    asg.create_or_update_tags(Tags=[
        {"ResourceId": fleet.group(c)["AutoScalingGroupName"], "ResourceType": "auto-scaling-group",
         "Key": contract.TAG_EVENT_BUS, "Value": f"bus-{c}", "PropagateAtLaunch": False} for c in ("blue", "green")])
    out = fleet.bluegreen("deploy", SERVICE, "2.0")
    expect_exit(out, 2, "name different bluegreen:event-bus tags (bus-blue, bus-green); make them agree, or pass "
                        "--event-bus")
    assert contract.TAG_OPERATION not in fleet.tags("blue")
    planned = json.loads(ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--event-bus", "bus-blue", "--dry-run",
                                            "--output", "json")).stdout)
    assert planned["events"] == {"event_bus": "bus-blue", "sns_topic": None}
    ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--event-bus", "bus-blue"))
    # Rollback, the escape hatch, is never held back by a notification setting: one warning, no bus.
    out = ok(fleet.bluegreen("rollback", SERVICE))
    assert "name different bluegreen:event-bus tags (bus-blue, bus-green); make them agree, or pass --event-bus " \
           "(this rollback sends its events to neither)" in out.stderr
    assert "not delivered" not in out.stderr


def test_json_lines_on_stderr_with_output_json_and_none_without(make_harness):
    fleet = make_harness(capacity=1)
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--output", "json"))
    lines = json_lines(out.stderr)
    assert types(lines) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED]
    assert all(e["source"] == "bluegreen" and e["time"] == e["detail"]["at"] for e in lines)
    assert json.loads(out.stdout)["result"] == "done"  # stdout keeps the one summary
    out = ok(fleet.bluegreen("rollback", SERVICE))
    assert json_lines(out.stderr) == []


def test_a_missing_bus_or_topic_warns_once_per_event_and_the_deploy_still_succeeds(make_harness):
    fleet = make_harness(capacity=1)
    missing_topic = "arn:aws:sns:us-east-1:123456789012:nowhere"
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--event-bus", "nowhere", "--sns-topic", missing_topic))
    warnings = [line for line in out.stderr.splitlines() if "not delivered" in line]
    assert len(warnings) == 6, warnings  # three events, two sinks
    assert "event started not delivered to EventBridge bus nowhere: PutEvents: ResourceNotFoundException" in warnings[0]
    fleet.assert_flipped("green", 1, "2.0")
    out = ok(fleet.bluegreen("rollback", SERVICE, "--event-bus", "nowhere"))
    history = json.loads(ok(fleet.bluegreen("history", SERVICE, "--output", "json")).stdout)["entries"]
    assert history[0]["events"] == {"delivered": 0, "failed": 2}  # rolled-back and restored; settled comes after


def test_a_failed_put_events_entry_is_a_warning_not_a_delivery(make_harness):
    # PutEvents answers 200 with FailedEntryCount when an entry fails (throttled, internal failure): the
    # emulator's fault put_events_failures answers the next N requests so (docs/localcloud.md).
    fleet = make_harness(capacity=1)
    sinks = Sinks(fleet.session)
    fleet.cloud.configure_faults(put_events_failures=1)
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--event-bus", sinks.bus))
    warnings = [line for line in out.stderr.splitlines() if "not delivered" in line]
    assert len(warnings) == 1 and "event started not delivered to EventBridge bus deploys: PutEvents: 1 entry " \
                                   "failed: ThrottlingException" in warnings[0]
    assert types(sinks.from_bus()) == [contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED]
    fleet.assert_flipped("green", 1, "2.0")


# -- the transition table (pure) -------------------------------------------------------------------------------


def rec(action, phase, started="2026-12-03T10:00:00Z"):
    return Record(action, phase, "2.0", "blue", started, "ci@runner:1")


@pytest.mark.parametrize("previous, record, expected", [
    (None, rec("deploy", "launch"), contract.EVENT_STARTED),
    (rec("deploy", "launch"), rec("deploy", "launch"), None),  # a resumed holder, a renewal
    (rec("deploy", "launch"), rec("deploy", "policies"), contract.EVENT_LAUNCHED),
    (rec("deploy", "policies"), rec("deploy", "flip"), None),
    (rec("deploy", "flip"), rec("deploy", "flipped"), contract.EVENT_FLIPPED),
    # --bake (issue 12 part 2): the record enters bake where it would have entered flipped, or serving.
    (rec("deploy", "flip"), rec("deploy", contract.PHASE_BAKE), contract.EVENT_FLIPPED),
    (rec("deploy", contract.PHASE_BAKE), rec("deploy", "flipped"), contract.EVENT_BAKED),
    (rec("canary", "launch"), rec("canary", contract.PHASE_BAKE), contract.EVENT_LAUNCHED),
    (rec("canary", contract.PHASE_BAKE), rec("canary", "serving"), contract.EVENT_BAKED),
    (rec("deploy", contract.PHASE_BAKE), rec("rollback", "restore", "2026-12-03T10:05:00Z"), contract.EVENT_ROLLED_BACK),
    (rec("canary", "launch"), rec("canary", "serving"), contract.EVENT_LAUNCHED),
    (rec("canary", "serving"), rec("deploy", "launch", "2026-12-03T10:05:00Z"), contract.EVENT_STARTED),
    (rec("rollback", "retire"), rec("rollback", "restored"), contract.EVENT_RESTORED),
    (rec("deploy", "launch"), rec("rollback", "restored"), contract.EVENT_RESTORED),  # an abort --wait restored
    (rec("deploy", "flipped"), rec("finalize", "drain", "2026-12-03T11:00:00Z"), contract.EVENT_STARTED),
    (rec("finalize", "drain"), rec("finalize", "detach"), None),
    (None, rec(contract.ACTION_INIT, "launch"), contract.EVENT_STARTED),  # issue 15's init
])
def test_transitions(previous, record, expected):
    assert events.transition(previous, record) == (((expected, record),) if expected else ())


def test_a_finalize_that_ends_a_bake_early_announces_no_baked():
    """Review finding: `finalize` run during a bake announced `baked`, though the bake never passed."""
    baking, finalizing = rec("deploy", contract.PHASE_BAKE), rec("finalize", "drain", "2026-12-03T10:15:00Z")
    assert events.transition(baking, finalizing) == ((contract.EVENT_STARTED, finalizing),)


def test_every_phase_and_event_of_the_contract_is_decided_in_the_table():
    phases = {p for ps in contract.PHASES.values() for p in ps} | {contract.PHASE_BAKE, contract.PHASE_RESTORED}
    silent = {contract.PHASE_LAUNCH, contract.PHASE_FLIP, contract.PHASE_RESTORE, contract.PHASE_RETIRE,
              contract.PHASE_DRAIN, contract.PHASE_DETACH, contract.PHASE_CLEANUP}
    named = {key[1] for key in events.TRANSITIONS if key[0] in ("enter", "leave")}
    assert phases == named | silent, "a new phase: decide in events.TRANSITIONS what its transition announces"
    assert set(events.TRANSITIONS.values()) == set(contract.EVENTS)
    assert [events.ended(r) for r in (contract.EVENT_ROLLED_BACK, contract.EVENT_ABORTED, contract.EVENT_FINALIZED,
                                      contract.EVENT_LAUNCHED)] \
        == [contract.EVENT_SETTLED, contract.EVENT_ABORTED, contract.EVENT_FINALIZED, contract.EVENT_LAUNCHED]
    assert {("start", action) for action in contract.ACTIONS} <= set(events.TRANSITIONS)


def test_without_a_state_store_the_events_still_come_with_the_phases_this_run_saw(make_harness):
    fleet = make_harness(capacity=1)
    fleet.asg.delete_tags(Tags=[{"ResourceId": fleet.svc["groups"][c], "ResourceType": "auto-scaling-group",
                                 "Key": contract.TAG_BOOTSTRAP} for c in ("blue", "green")])  # no store to locate
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--output", "json"))
    assert "no state store for demo" in out.stderr
    lines = json_lines(out.stderr)
    assert types(lines) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED]
    flipped = lines[-1]["detail"]
    assert flipped["operation"] is None and flipped["version"] == "2.0"
    assert [p["phase"] for p in flipped["durations"]["phases"]] == ["launch", "policies", "flip", "flipped"]


# -- with a bake (issue 12 part 2): the events of the watch ------------------------------------------------------


def test_a_bake_that_passes_into_finalize_announces_flipped_baked_then_the_finalize(make_harness):
    fleet = baking(make_harness, capacity=2)
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--bake", "120", "--finalize", "--output", "json"))
    lines = json_lines(out.stderr)
    assert types(lines) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED,
                            contract.EVENT_BAKED, contract.EVENT_STARTED, contract.EVENT_FINALIZED]
    flipped, baked = lines[2]["detail"], lines[3]["detail"]
    assert (flipped["action"], flipped["phase"], baked["action"], baked["phase"]) == \
        ("deploy", contract.PHASE_BAKE, "deploy", contract.PHASE_FLIPPED)
    assert baked["durations"]["elapsed_s"] >= flipped["durations"]["elapsed_s"]
    assert lines[4]["detail"]["action"] == "finalize"


def test_an_alarm_that_rolls_the_deploy_back_is_named_by_the_rolled_back_event(make_harness):
    fleet = baking(make_harness)
    put_alarm(fleet)
    once_baking(fleet, 60, lambda: set_state(fleet, ALARM, "ALARM"))
    out = fleet.bluegreen("deploy", SERVICE, "2.0", "--bake", "600", "--alarm", ALARM, "--output", "json")
    expect_exit(out, 1)
    lines = json_lines(out.stderr)
    assert types(lines) == [contract.EVENT_STARTED, contract.EVENT_LAUNCHED, contract.EVENT_FLIPPED,
                            contract.EVENT_ROLLED_BACK, contract.EVENT_RESTORED, contract.EVENT_SETTLED]
    rolled = lines[3]["detail"]
    assert (rolled["by"], rolled["reason"], rolled["version"]) == (f"alarm {ALARM}", f"alarm {ALARM}", "2.0")
    assert lines[-1]["detail"]["result"] == contract.EVENT_ROLLED_BACK


def test_a_resumed_bake_that_was_not_watched_says_since_when_in_its_events(make_harness):
    """Issue 12 ("a crashed watcher"): the rerun that resumes an unwatched bake says the gap in its events."""
    fleet = baking(make_harness)
    kill_mid_bake(fleet, 50)
    args = ("deploy", SERVICE, "2.0", "--bake", "300")
    expect_exit(fleet.bluegreen(*args, me="ci@runner:1"), -9)
    watched = lock(fleet)["operation"]["bake"]["watched"]
    fleet.advance(60)  # longer than the watcher's stale limit: nothing watched the bake meanwhile
    out = ok(fleet.bluegreen(*args, "--output", "json"))
    baked = [line["detail"] for line in json_lines(out.stderr) if line["detail"]["event"] == contract.EVENT_BAKED]
    assert len(baked) == 1 and baked[0]["bake_not_watched_since"] == watched, baked
    assert f"not watched since {watched}" in out.stderr


def test_a_bake_watched_throughout_says_no_gap(make_harness):
    fleet = baking(make_harness, capacity=2)
    out = ok(fleet.bluegreen("deploy", SERVICE, "2.0", "--bake", "120", "--output", "json"))
    assert all("bake_not_watched_since" not in line["detail"] for line in json_lines(out.stderr))
