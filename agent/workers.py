"""Standby means "no work": the compose services marked `bluegreen.when: in-service` run only while the instance
is InService (issue 16). Pure planning here; the loop that applies it is agent/watch.py.

    services:
      web:     {image: ...}                                   # unmarked: runs always, as before
      worker:  {image: ..., labels: {bluegreen.when: in-service}}   # runs only while InService

The instance knows its own state: IMDS `autoscaling/target-lifecycle-state` (I2) says InService, Standby,
Detached, Warmed:*, Terminated. A Standby instance is out of the load balancer but keeps running; without this,
its queue consumers and schedulers go on working beside the new fleet's for the whole bake window.
"""

LABEL = "bluegreen.when"
IN_SERVICE = "in-service"
RUNNING = "running"
STOPPED = "stopped"


def labels_of(service):
    """A compose service's labels as a dict: compose accepts a mapping or a list of KEY=VALUE (or KEY)."""
    labels = (service or {}).get("labels") or {}
    if isinstance(labels, dict):
        return {str(k): "" if v is None else str(v) for k, v in labels.items()}
    out = {}
    for item in labels:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def marked_services(model):
    """The services of a compose model marked to run only while the instance is InService, sorted. Pure."""
    return sorted(name for name, service in (model.get("services") or {}).items()
                  if labels_of(service).get(LABEL, "").strip().lower() == IN_SERVICE)


def unmarked_services(model):
    """Every other service of the model, sorted: what the boot run starts and judges. Pure."""
    marked = set(marked_services(model))
    return sorted(name for name in (model.get("services") or {}) if name not in marked)


def wanted(target_state, launched):
    """RUNNING or STOPPED for the marked services, or None to keep what runs (the state is unknown: IMDS did not
    answer, I3; a hiccup must not flap the workers).

    target_state: IMDS's target lifecycle state, or None when it could not be read. It names the state the
    instance is headed for: an instance in Pending:Wait already reads InService, so `launched` (the boot run
    completed its launch, CONTINUE included) must hold too, or workers would consume before the instance serves.
    Every state but InService stops them: Standby, Detached, Warmed:*, Terminated, and any value not known."""
    if target_state is None:
        return None
    if target_state.strip() == "InService" and launched:
        return RUNNING
    return STOPPED


def plan(want, marked, running):
    """What to do now: ("start", [services]), ("stop", [services]) or None. Reconciled at every poll, not only
    on a change, because Docker's restart policies bring a stopped container back (a daemon restart). Pure."""
    if want is None or not marked:
        return None
    running = set(running)
    if want == RUNNING:
        missing = [name for name in marked if name not in running]
        return ("start", missing) if missing else None
    present = [name for name in marked if name in running]
    return ("stop", present) if present else None
