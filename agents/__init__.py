"""Agents that act in rise-gym environments, and the LLM back ends they use."""

from agents.base import Action, Agent, FunctionAgent, as_action

__all__ = ["Action", "Agent", "FunctionAgent", "as_action"]
