"""``farm serve``: the film folders under OUT as web pages and a JSON API, read-only and live.

films.py reads a film's folder into a record (spec, scenes, runs, files), pages.py draws the
pages, app.py is the aiohttp application and its server; static/ holds the pages' script and style.
Imports neither torch nor Ray: it only reads folders.
"""
