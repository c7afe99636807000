"""specs.py exactly: sizes, CPUs, GPU and port specs as typed, and the words of each refusal.

Every message a user reads is pinned in full, and every boundary, so that scripts/mutation's
changes to the module fail a test. Engine-free and fast."""

from __future__ import annotations

import os

import pytest

from git_gpuspace import specs
from git_gpuspace.model import GpuRequest, PortRequest

from helpers import usage_error


def test_an_unparsable_size_quotes_it_and_shows_the_forms():
    error = usage_error(specs.parse_size, "12q", "--shm-size")
    assert str(error) == "invalid --shm-size '12q'"
    assert error.hint == "use a number with an optional unit: 512m, 16g, 1.5t"


def test_a_size_below_the_minimum_names_the_minimum():
    assert specs.parse_size("1", "--memory") == 1
    assert str(usage_error(specs.parse_size, "0", "--memory")) == "--memory '0' is too small (at least 1)"
    assert str(usage_error(specs.parse_size, "0.5", "--memory")) == "--memory '0.5' is too small (at least 1)"
    assert specs.parse_size("6m", "--memory", specs.MIN_MEMORY) == 6 << 20
    too_small = usage_error(specs.parse_size, "5m", "--memory", specs.MIN_MEMORY)
    assert str(too_small) == "--memory '5m' is too small (at least 6m)"


def test_host_memory_is_the_physical_memory():
    """Physical pages times the page size, the ceiling of --memory."""
    assert specs.host_memory() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 64 << 20


def test_a_limit_up_to_the_host_memory_is_accepted_and_more_is_refused(monkeypatch):
    monkeypatch.setattr(specs, "host_memory", lambda: 8 << 30)
    assert specs.parse_limit("8g", "--memory") == 8 << 30
    assert specs.parse_limit("1", "--memory") == 1
    assert str(usage_error(specs.parse_limit, "9g", "--memory")) == "--memory 9g is more than this host's memory (8g)"
    too_small = usage_error(specs.parse_limit, "5m", "--memory", specs.MIN_MEMORY)
    assert str(too_small) == "--memory '5m' is too small (at least 6m)"
    assert str(usage_error(specs.parse_limit, "lots", "--shm-size")) == "invalid --shm-size 'lots'"


def test_a_limit_is_not_capped_where_the_host_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(specs, "host_memory", lambda: None)
    assert specs.parse_limit("1p", "--memory") == 1 << 50


@pytest.mark.parametrize("num_bytes,text", [(1 << 10, "1k"), (1 << 20, "1m"), (3 << 40, "3t"), (1536, "1.5k"),
                                            ((5 << 30) // 2 + 1, "2.5g"), (1023, "1023")])
def test_format_size_prefers_whole_units_then_one_decimal(num_bytes, text):
    assert specs.format_size(num_bytes) == text


def test_cpus_at_both_ends_of_the_range_are_accepted():
    host = os.cpu_count() or 1
    assert specs.parse_cpus("0.01") == 0.01
    assert specs.parse_cpus(str(host)) == host


def test_cpus_out_of_range_names_the_range():
    host = os.cpu_count() or 1
    message = str(usage_error(specs.parse_cpus, "0.009"))
    assert message == f"--cpus 0.009 is out of range: this host has {host} CPUs (0.01 to {host})"


def test_cpus_that_are_no_number_quote_the_text():
    error = usage_error(specs.parse_cpus, "four")
    assert str(error) == "invalid --cpus 'four'"
    assert error.hint == "use a number such as 4 or 2.5"


def test_a_host_whose_cpu_count_is_unknown_counts_as_one_cpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert specs.parse_cpus("1") == 1
    assert str(usage_error(specs.parse_cpus, "1.5")) == "--cpus 1.5 is out of range: this host has 1 CPUs (0.01 to 1)"


GPU_HINT = "use a count (2), indices or UUIDs (0,2 or GPU-…), 'all' or 'none'"


@pytest.mark.parametrize("text", ["", "  ", "None", "0"])
def test_empty_none_and_zero_gpus_mean_no_gpu(text):
    assert specs.parse_gpus(text) == GpuRequest()


@pytest.mark.parametrize("text,message", [
    (",", "invalid --gpus ','"),
    ("device=", "invalid --gpus 'device='"),
    ("0,x", "invalid GPU id 'x' in --gpus '0,x'"),
])
def test_bad_gpu_specs_quote_what_was_typed_with_the_forms(text, message):
    error = usage_error(specs.parse_gpus, text)
    assert str(error) == message and error.hint == GPU_HINT


def test_gpus_listed_twice_are_named_once_each():
    assert str(usage_error(specs.parse_gpus, "1,0,1,0")) == "GPU 0, 1 is listed twice in --gpus '1,0,1,0'"


@pytest.mark.parametrize("text,request_", [
    ("web=8000", PortRequest("web", 8000)),
    (" tb=6006:16006 ", PortRequest("tb", 6006, 16006)),
    ("a=1:65535", PortRequest("a", 1, 65535)),
])
def test_port_specs_name_a_container_port_and_maybe_a_host_port(text, request_):
    assert specs.parse_port(text) == request_


@pytest.mark.parametrize("text", ["web", "web=", "Web=80", "web=80:", "=80", "web=80:90:100"])
def test_a_malformed_port_spec_shows_the_form(text):
    error = usage_error(specs.parse_port, text)
    assert str(error) == f"invalid --port '{text}'"
    assert error.hint == "write NAME=CONTAINER_PORT or NAME=CONTAINER_PORT:HOST_PORT, e.g. --port web=8000"


@pytest.mark.parametrize("text,number", [("web=0", 0), ("web=65536", 65536), ("web=80:0", 0), ("web=80:99999", 99999)])
def test_a_port_number_out_of_range_is_named(text, number):
    assert str(usage_error(specs.parse_port, text)) == f"port {number} in '{text}' is out of range (1-65535)"


@pytest.mark.parametrize("text,address", [(" 0.0.0.0 ", "0.0.0.0"), ("0:0::1", "::1")])
def test_a_publish_address_is_normalised(text, address):
    assert specs.parse_address(text) == address


def test_a_bad_publish_address_quotes_it():
    error = usage_error(specs.parse_address, "localhost")
    assert str(error) == "invalid --publish-address 'localhost'"
    assert error.hint == "an IP address such as 127.0.0.1"
