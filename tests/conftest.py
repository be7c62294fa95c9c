import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)                      # builders
sys.path.insert(0, os.path.dirname(HERE))     # the models/ zoo
os.environ.setdefault("OVPTQ_PROGRESS", "0")
