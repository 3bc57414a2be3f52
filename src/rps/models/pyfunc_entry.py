"""MLflow "models from code" entry point: logged as the pyfunc's ``python_model`` file.

MLflow executes this file when loading the model, so no pickled object is stored.
"""

from mlflow.models import set_model

from rps.models.pyfunc import BundlePythonModel

set_model(BundlePythonModel())
