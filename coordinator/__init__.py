"""The coordinator: exchange-ADMM over the coupling rows, holding demand and scaled duals.

It sees each site's proposed served demand ``A_i x_i`` and nothing else of a site; it
never imports a site's data loaders (``thermoroute.site_agent.data``).
"""
