"""Test harness: gateway processes (node.py), tokens (tokens.py), HTTP (http.py), WebSocket client (ws.py)."""
