"""The HTTP layer (Litestar only here): the app factory, middleware, authentication,
problem bodies, wire schemas and one controller module per feature. It translates
requests into application operations (api.service) and their results into responses."""
