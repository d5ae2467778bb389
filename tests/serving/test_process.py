import socket

from serving.process import free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(20000 <= port < 32000 for port in ports) and len(ports) > 1
    with socket.socket() as server:
        server.bind(("127.0.0.1", min(ports)))  # free: nothing listens there
