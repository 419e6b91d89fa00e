"""The coordinator: the global exchange over the coupling rows of any registered distributed
method (:mod:`thermoroute.coordinator.methods`: the interior point,
:mod:`thermoroute.coordinator.ipm`, and exchange ADMM, :mod:`thermoroute.coordinator.admm`),
holding the demand and the prices of the rows.

It sees only what a method's messages carry (ADMM: each site's served demand ``A_i x_i``;
the interior point: masked fleet sums) and never imports a site's data loaders
(``thermoroute.site_agent.data``).
"""
