"""The file MLflow runs to build the purchase-intent pyfunc when it loads one (MLflow's "models from code")."""

from mlflow.models import set_model

from training.pyfunc import PurchaseIntent

set_model(PurchaseIntent())
