from twisted.application.service import ServiceMaker

rainbowd = ServiceMaker(
    "rainbowd",
    "rainbowd.tap",
    "Run a web app and redeploy it with zero downtime.",
    "rainbowd",
)
