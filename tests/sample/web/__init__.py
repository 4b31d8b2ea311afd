from flask import Blueprint

# Events that browsers may log through POST /event/log (and one they may not).
bp = Blueprint("web", __name__)
