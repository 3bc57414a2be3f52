"""Build and execute notebooks/01_exploration.ipynb (run: uv run python notebooks/build_exploration.py)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

cells = [
    nbformat.v4.new_markdown_cell(
        "# Exploring the replayed weather\n\n"
        "Real hourly observations from station 723170 (Greensboro Piedmont Triad International, NC), "
        "a TMY3 year shipped with pvlib, converted to Open-Meteo's variable names and units by "
        "`rps.data.sources.replay`. Questions: how strong are the daily and yearly cycles, how fast "
        "does temperature decorrelate, and which lags should the 6 h-ahead model see?"
    ),
    nbformat.v4.new_code_cell(
        "import numpy as np, pandas as pd, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from rps.data.sources.replay import read_tmy3, default_recording, ReplaySource, ReplayClock\n"
        "from rps.params import load_params\n"
        "params = load_params('../params.yaml')\n"
        "now = pd.Timestamp('2026-06-15 12:00', tz='UTC')\n"
        "source = ReplaySource(read_tmy3(default_recording()), clock=ReplayClock(wall_now=lambda: now, anchor=now), variables=params.data.variables)\n"
        "obs = source.fetch(now - pd.Timedelta(days=365), now).frame.set_index('time')\n"
        "obs.describe().T.round(1)"
    ),
    nbformat.v4.new_markdown_cell("## Seasonality: the daily cycle by month"),
    nbformat.v4.new_code_cell(
        "t = obs['temperature_2m']\n"
        "profile = t.groupby([t.index.month, t.index.hour]).mean().unstack(0)\n"
        "ax = profile.plot(figsize=(9, 4), legend=False, title='Mean temperature by UTC hour, one line per month')\n"
        "ax.set_xlabel('hour (UTC)'); ax.set_ylabel('degC'); plt.show()\n"
        "print('daily amplitude by month (degC):', (profile.max() - profile.min()).round(1).to_dict())"
    ),
    nbformat.v4.new_markdown_cell("## Autocorrelation: how fast does temperature forget?"),
    nbformat.v4.new_code_cell(
        "lags = range(1, 169)\n"
        "acf = [t.autocorr(l) for l in lags]\n"
        "plt.figure(figsize=(9, 3)); plt.plot(list(lags), acf); plt.axvline(24, ls='--'); plt.axvline(168, ls='--')\n"
        "plt.title('Autocorrelation of hourly temperature'); plt.xlabel('lag (h)'); plt.show()\n"
        "print({l: round(t.autocorr(l), 3) for l in (1, 3, 6, 12, 18, 24, 48, 168)})"
    ),
    nbformat.v4.new_markdown_cell("## Which lags matter for the value 6 h ahead?"),
    nbformat.v4.new_code_cell(
        "h = params.features.horizon_hours\n"
        "target = t.shift(-h)\n"
        "rows = {f'lag{l}': target.corr(t.shift(l)) for l in (0, 1, 2, 3, 6, 12, 18, 24, 48, 168)}\n"
        "rows['dew point now'] = target.corr(obs['dew_point_2m'])\n"
        "rows['pressure tendency 3h'] = target.corr(obs['surface_pressure'].diff(3))\n"
        "pd.Series(rows, name=f'corr with temperature at t+{h}h').round(3)"
    ),
    nbformat.v4.new_code_cell(
        "persist = np.sqrt(((target - t) ** 2).mean())\n"
        "seasonal = np.sqrt(((target - t.shift(24 - h)) ** 2).mean())\n"
        "print(f'RMSE persistence {persist:.2f} degC, seasonal naive (24 h) {seasonal:.2f} degC')\n"
        "jumps = t.diff().abs()\n"
        "print('largest hourly jumps (TMY month seams show here):'); print(jumps.nlargest(5).round(1))"
    ),
    nbformat.v4.new_markdown_cell(
        "## Findings\n\n"
        "* A strong daily cycle (amplitude roughly 8-12 degC, larger in dry months) on top of the "
        "yearly cycle: hour-of-day of the *target* time is the most useful calendar feature.\n"
        "* Temperature stays highly autocorrelated for hours and peaks again at 24 h, so the model "
        "sees lags 1-3 (momentum), 18 (= 24 - horizon, the same hour yesterday as the target) and 24/48/168.\n"
        "* Persistence is a weak baseline at 6 h because of the daily cycle; the seasonal-naive "
        "forecast is stronger, and a learned model has to beat both.\n"
        "* TMY months come from different years: expect a jump at some month boundaries; the "
        "cleaning step only removes single-hour spikes, so these seams stay (they are real values)."
    ),
]
nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
here = Path(__file__).parent
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
nbformat.write(nb, here / "01_exploration.ipynb")
print("wrote", here / "01_exploration.ipynb")
