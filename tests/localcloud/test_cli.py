"""`bluegreen-localcloud aws` and `imds` as subprocesses: first stdout line, real clients, clean SIGTERM stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import boto3
import pytest

from tests.localcloud.support import aws_error

BIN = os.path.join(os.path.dirname(sys.executable), "bluegreen-localcloud")


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # the command flushes it first; readline ends at EOF if it dies
    return proc, line


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_aws_command_serves_a_separate_process_and_stops_on_sigterm(monkeypatch):
    proc, line = _start("aws", "--time-scale", "0.01")
    try:
        assert line.startswith("AWS_ENDPOINT_URL=http://127.0.0.1:"), (line, proc.stderr.read())
        endpoint = line.split("=", 1)[1]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        asg = boto3.client("autoscaling", endpoint_url=endpoint, region_name="us-east-1")
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
        lt = ec2.create_launch_template(LaunchTemplateName="lt", LaunchTemplateData={"ImageId": "ami-12c6146b"})
        asg.create_auto_scaling_group(AutoScalingGroupName="blue", MinSize=0, MaxSize=2, DesiredCapacity=1,
                                      AvailabilityZones=["us-east-1a"],
                                      LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplate"]["LaunchTemplateId"]})
        group = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]
        assert [i["LifecycleState"] for i in group["Instances"]] == ["Pending"]
        with pytest.raises(asg.exceptions.ClientError) as excinfo:
            asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=3)
        assert aws_error(excinfo)[0] == "ValidationError"
    finally:
        assert _stop(proc) == 0


def test_imds_command_answers_with_a_token(cloud):
    proc, line = _start("imds", "i-0123456789abcdef0", "--aws-endpoint", cloud.endpoint)
    try:
        assert line.startswith("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:"), (line, proc.stderr.read())
        base = line.split("=", 1)[1].rstrip("/")
        req = urllib.request.Request(base + "/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            token = resp.read().decode()
        req = urllib.request.Request(base + "/latest/meta-data/instance-id",
                                     headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read().decode() == "i-0123456789abcdef0"
    finally:
        assert _stop(proc) == 0


def test_bad_arguments_give_one_line_and_exit_2():
    out = subprocess.run([BIN, "aws", "--time-scale", "-1"], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "--time-scale" in out.stderr


def test_a_taken_port_exits_1_with_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        out = subprocess.run([BIN, "aws", "--port", str(port)], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().startswith(f"bluegreen-localcloud aws: cannot listen on 127.0.0.1:{port}")
    assert out.stdout == ""
