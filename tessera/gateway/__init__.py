"""``tessera gateway``: an OpenAI-compatible HTTP server that pays for each request on chain,
streams the tokens as the head produces them, and serves the network explorer."""
