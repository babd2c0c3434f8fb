"""Networking: bridges, IPAM, iptables, published ports, embedded DNS; manager.py owns
the networks and each container's endpoints."""
