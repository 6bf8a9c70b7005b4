"""Trains a small scikit-learn classifier for the MLServer tests (run with .venv-mlserver/bin/python).

usage: train_sklearn.py OUT_DIR
Writes OUT_DIR/model.joblib (an SVC on scikit-learn's bundled digits data set, no download)
and OUT_DIR/expected.json with five input rows (float64) and their predicted labels.
"""
import json
import os
import sys

import joblib
from sklearn import datasets, svm


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    x, y = datasets.load_digits(return_X_y=True)
    clf = svm.SVC(gamma=0.001).fit(x[:1000], y[:1000])
    joblib.dump(clf, os.path.join(out, "model.joblib"))
    rows = x[1000:1005]
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"rows": rows.tolist(), "labels": clf.predict(rows).tolist()}, f)


if __name__ == "__main__":
    main()
