from flask import Blueprint

# Defined in a module of the package: the events module is still tests.sample.users.events.
bp = Blueprint("users", __name__)
