"""LAM of a video SR model's input frames: `method.py` registers it, `options.py` declares its
options, `analyzer.py` holds `VideoAnalyzer`, its result, its picture strip and its folder."""
