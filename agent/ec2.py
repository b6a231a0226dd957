"""EC2: the agent's one write to its own instance, the `bluegreen:running` tag (docs/contract.md, "What the
agent publishes about itself"), which the deployer's verified gate reads (deployer/watch.py).

The client is a botocore "ec2" client made in the CLI entry and passed in. The grant is scoped to the
instance itself (iam/agent-policy.json: ec2:SourceInstanceARN equal to the tagged instance's ARN).
"""

import logging

from agent import contract

log = logging.getLogger(__name__)


def publish_running(client, instance_id, running):
    """CreateTags bluegreen:running on this instance; True when written.

    A failure is logged, never raised: the stack is up and healthy (or has already failed for its own reason),
    and failing the run for a tag would ABANDON a good instance at launch. Without the tag the deployer's gate
    counts the instance on its health alone, as for an agent older than the tag; or, when the rest of the fleet
    publishes, waits for it and reports it (X1: a tag may also simply not be visible yet)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = contract.encode_running(running)
        client.create_tags(Resources=[instance_id], Tags=[{"Key": contract.TAG_RUNNING, "Value": value}])
    except (BotoCoreError, ClientError, contract.ContractError) as exc:
        log.warning("could not publish %s on %s: %s", contract.TAG_RUNNING, instance_id, exc)
        return False
    log.info("published %s=%s on %s", contract.TAG_RUNNING, value, instance_id)
    return True


def publish_workers(client, instance_id, value):
    """CreateTags bluegreen:workers (running | stopped) on this instance; True when written. Best effort, like
    bluegreen:running: the deployer's `status` shows it, nothing waits on it failing."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        contract.check_workers(value)
        client.create_tags(Resources=[instance_id], Tags=[{"Key": contract.TAG_WORKERS, "Value": value}])
    except (BotoCoreError, ClientError, contract.ContractError) as exc:
        log.warning("could not publish %s on %s: %s", contract.TAG_WORKERS, instance_id, exc)
        return False
    log.info("published %s=%s on %s", contract.TAG_WORKERS, value, instance_id)
    return True
