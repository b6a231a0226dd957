"""The local fleet: real agents, real containers and HAProxy behind the emulated AWS (`bluegreen-localcloud up`).

Modules, one per outside system: `haproxy` (the load balancer, through its runtime API), `instances` (one
emulated EC2 instance: its IMDS endpoint, its `bluegreen-agent run` process and its compose stack), `load`
(a bounded request loop through the load balancer), `supervisor` (follows the emulated AWS and drives both),
`daemon` (the background process behind `up`/`down`/`status`).
"""


class FleetError(Exception):
    """Base of every error the local fleet raises."""


class FleetTimeout(FleetError):
    """A wait ran past its deadline; the message names what it waited for and the last state seen."""
