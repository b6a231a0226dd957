"""Cross-zone load balancing settings (E6): stored and returned as AWS does, and resolved to one answer.

- Target groups carry `load_balancing.cross_zone.enabled`: `true`, `false` or, by default,
  `use_load_balancer_configuration` (moto keeps it; the layer refuses any other value).
- Load balancers: an ALB has cross-zone always on and it cannot be turned off at the load-balancer level
  (ELB user guide, "Cross-zone load balancing for target groups"); moto reports "false" for every type, the
  layer says "true" for an ALB and refuses "false" there. An NLB (and a GWLB) has it off by default.
- A Classic ELB made through the API has CrossZoneLoadBalancing off by default (moto's default already).
Nothing in the emulator routes requests: `target_group_cross_zone` and `classic_cross_zone` are what a
router in front of the emulation (the local fleet's HAProxy view) reads.
"""

from __future__ import annotations

from typing import Any

from . import moto_seam as seam
from .moto_seam import ELBv2Backend, FakeTargetGroup
from .moto_seam import ELBv2ValidationError as ValidationError

KEY = "load_balancing.cross_zone.enabled"
TG_VALUES = ("true", "false", "use_load_balancer_configuration")


@seam.replaces(ELBv2Backend, "create_load_balancer")
def _create_load_balancer(self: ELBv2Backend, name: str, *args: Any, **kwargs: Any) -> Any:
    lb = seam.original(ELBv2Backend, "create_load_balancer")(self, name, *args, **kwargs)
    if lb.type == "application":
        lb.attrs[KEY] = "true"  # E6: always on for an ALB (moto says "false")
    return lb


@seam.replaces(ELBv2Backend, "modify_load_balancer_attributes")
def _modify_load_balancer_attributes(self: ELBv2Backend, arn: str, attrs: dict[str, Any]) -> dict[str, Any]:
    lb = self.load_balancers.get(arn)
    if lb is not None and lb.type == "application" and KEY in attrs and str(attrs[KEY]).lower() != "true":
        # E6: (error code unverified; ValidationError is the conservative emulation)
        raise ValidationError("Cross-zone load balancing cannot be turned off for an Application Load Balancer; "
                              "turn it off on the target group instead")
    return seam.original(ELBv2Backend, "modify_load_balancer_attributes")(self, arn, attrs)


def check_target_group_attributes(attributes: dict[str, Any]) -> None:
    """E6: the values ModifyTargetGroupAttributes accepts for the cross-zone attribute."""
    value = attributes.get(KEY)
    if value is not None and str(value) not in TG_VALUES:
        raise ValidationError(f"'{KEY}' must be one of {', '.join(TG_VALUES)}, got '{value}'")


def resolve(tg_value: Any, lb_type: str | None, lb_value: Any) -> bool:
    """E6: whether a load balancer node sends a target group's requests to other zones' targets, from plain
    describe data: the target group's attribute, the forwarding load balancer's Type and its attribute.

    The target group's own `true` / `false` wins; `use_load_balancer_configuration` takes the load balancer's
    (an ALB: always on). A target group in front of no load balancer (lb_type None: the local fleet's, whose
    HAProxy stands for an ALB) follows an ALB: on.
    """
    value = str(tg_value or "use_load_balancer_configuration").lower()
    if value in ("true", "false"):
        return value == "true"
    if lb_type is None or lb_type == "application":
        return True
    return str(lb_value or "false").lower() == "true"


def target_group_cross_zone(backend: ELBv2Backend, tg: FakeTargetGroup) -> bool:
    """`resolve` for a target group of this backend (the first load balancer that forwards to it)."""
    lbs = [backend.load_balancers[a] for a in tg.load_balancer_arns if a in backend.load_balancers]
    lb = lbs[0] if lbs else None
    return resolve(tg.attributes.get(KEY), lb.type if lb else None, lb.attrs.get(KEY) if lb else None)


def classic_cross_zone(lb: Any) -> bool:
    """E6: a Classic ELB's CrossZoneLoadBalancing (moto spells the stored key as the request did)."""
    setting = lb.attributes.get("cross_zone_load_balancing", {}) if lb is not None else {}
    return str(setting.get("Enabled", setting.get("enabled", False))).lower() == "true"
