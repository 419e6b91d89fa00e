"""The site agent: one edge data centre's private data, its problem, and the site side of
each distributed method (:mod:`thermoroute.site_agent.methods`)."""
