"""How clients reach the core: each protocol decodes its requests, calls the core and
encodes the answers, with one table mapping the core's errors to its status codes."""
