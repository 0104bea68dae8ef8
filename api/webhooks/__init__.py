"""Outgoing webhooks: callback URL checks, signatures, and the dispatcher that drains the outbox."""
