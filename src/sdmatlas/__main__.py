from sdmatlas.cli import app

app(prog_name="sdmatlas")
