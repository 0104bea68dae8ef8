"""The Jobs API (jobs-api.md): router, schemas and the service the router and the dispatcher share."""
