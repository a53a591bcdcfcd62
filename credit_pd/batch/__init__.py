"""The batch wing: explained PD scoring of a whole book on Apache Spark (`batch_score.py`).

It reads the model store entry (booster, encoder, calibration, schema) once on the driver, ships
it to the executors, and scores with `mapInPandas` through the same core objects as `train.py` and
the service, so a row's PD and contributions are the same numbers wherever it is scored. pyspark is
an optional extra (`pip install -e ".[spark]"`); nothing here is imported by the service.
"""
