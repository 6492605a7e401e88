"""Topology discovery, cost model, hierarchical collectives, emulated cluster and simulator."""
