"""Adapters that keep agent frameworks' sessions in a statestore Store.

Each module is an optional extra and imports its framework; import the one you use:
``statestore.integrations.openai_agents`` (``statestore[openai-agents]``),
``statestore.integrations.langchain`` (``statestore[langchain]``),
``statestore.integrations.google_adk`` (``statestore[google-adk]``). They use the
public Store API only.
"""
