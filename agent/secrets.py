"""compose_env secret references, resolved at run time (audit F15): SSM Parameter Store and Secrets Manager.

User-data is readable by every process on the instance through IMDS (and by containers when the hop limit is
2 or more), and the config file and the bundle are copied around: a secret lives in none of them, only its
reference (agent/settings.py SecretRef). The agent reads each value here, before anything switched, and hands
it to compose's environment only: a value is never logged, never in status.json, never in an error, and `show`
and `--dry-run` print the reference.

The clients are botocore "ssm" and "secretsmanager" clients made in the CLI entry (agent/cli.py Clients),
passed in as `ssm(region)` and `secretsmanager(region)`; botocore retries throttling itself (A10).
"""

import json
import logging

from agent.errors import SettingsError

log = logging.getLogger(__name__)

# What each failure means for the operator; the AWS message (an ARN, never a value) follows it.
_WHY = {
    "ParameterNotFound": "no such parameter",
    "ParameterVersionNotFound": "no such parameter version",
    "ResourceNotFoundException": "no such secret",
    "AccessDeniedException": "access denied: the instance role needs ssm:GetParameter or "
                             "secretsmanager:GetSecretValue on it, and kms:Decrypt on a customer managed key "
                             "(iam/agent-secrets-policy.json)",
    "DecryptionFailure": "its KMS key cannot decrypt it for this role",
    "InvalidRequestException": "the secret cannot be read now (scheduled for deletion?)",
}


def _client_errors():
    from botocore.exceptions import BotoCoreError, ClientError  # lazily: keeps `--help` fast

    return BotoCoreError, ClientError


def resolve(refs, region, ssm, secretsmanager):
    """{NAME: value} for {NAME: SecretRef}. Raises SettingsError (exit 5: a value the settings need is missing)
    naming the first reference that fails."""
    botocore_error, client_error = _client_errors()
    values = {}
    for name, ref in sorted(refs.items()):
        where = f"{ref} (compose_env {name})"
        try:
            if ref.source == "ssm":
                client = ssm(ref.region or region)
                values[name] = client.get_parameter(Name=ref.id, WithDecryption=True)["Parameter"]["Value"]
            else:
                client = secretsmanager(ref.region or region)
                values[name] = _secret_text(client.get_secret_value(SecretId=ref.id), ref, where)
        except client_error as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), " ".join(str(error.get("Message", "")).split())
            why = _WHY.get(code, "cannot be read")
            raise SettingsError(f"{where}: {why} ({code}{': ' + message if message else ''})") from None
        except botocore_error as exc:
            raise SettingsError(f"{where}: cannot be read: {exc}") from None
    if values:
        log.info("secrets: resolved %s", ", ".join(f"{name} from {refs[name]}" for name in sorted(values)))
    return values


def _secret_text(answer, ref, where):
    text = answer.get("SecretString")
    if text is None:
        raise SettingsError(f"{where}: the secret holds binary data; only text can go into compose's environment")
    if ref.key is None:
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None  # the parser's message may quote the value: never shown
    if not isinstance(doc, dict) or ref.key not in doc:
        raise SettingsError(f"{where}: the secret is not a JSON object with the key {ref.key}")
    field = doc[ref.key]
    if isinstance(field, (dict, list)) or field is None:
        raise SettingsError(f"{where}: the key {ref.key} holds no plain value")
    return str(field).lower() if isinstance(field, bool) else str(field)
