"""L1: CreateLaunchTemplateVersion as EC2 does it (docs/localcloud.md).

EC2: with SourceVersion, the new version is the source version's data with the request's LaunchTemplateData
keys laid over it ("the new version inherits the source's parameters, except those you specify"); UserData is
base64 text. moto 5.x ignores SourceVersion (the new version holds only the keys given) and keeps UserData as a
plain string, on which launching from that version fails an assertion (an HTTP 500). A new version made to
change one setting, as an operator or the tests do, must keep the user-data, instance profile and metadata
options of the version it came from.
"""

from __future__ import annotations

import copy
from typing import Any

from . import moto_seam as seam
from .moto_seam import ActionResult, LaunchTemplates, parse_user_data


@seam.replaces(LaunchTemplates, "create_launch_template_version")
def create_launch_template_version(self: Any) -> Any:
    name = self._get_param("LaunchTemplateName")
    template_id = self._get_param("LaunchTemplateId")
    template = self.ec2_backend.get_launch_template(template_id) if template_id else \
        self.ec2_backend.get_launch_template_by_name(name)
    description = self._get_param("VersionDescription")
    given = self._get_param("LaunchTemplateData", {}) or {}
    if "UserData" in given:
        given["UserData"] = parse_user_data(self._get_param("LaunchTemplateData.UserData"))
    source = self._get_param("SourceVersion")
    data = copy.deepcopy(template.get_version(source).data) if source else {}
    data.update(given)
    self.error_on_dryrun()
    version = template.create_version(data, description)
    return ActionResult({"LaunchTemplateVersion": {
        "CreateTime": version.create_time,
        "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
        "DefaultVersion": template.is_default(version),
        "LaunchTemplateData": version.data,
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "VersionDescription": version.description,
        "VersionNumber": version.number,
    }})
