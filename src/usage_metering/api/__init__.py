"""The HTTP front end (thin): routes over the Metering library; `api.app.create_app` builds it."""
