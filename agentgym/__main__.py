from agentgym.cli import app

app()
