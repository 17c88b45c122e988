"""A stock NVFlare FedAvg job whose sites check every global model with gradguard first.

python job.py [--rounds 3] [--workspace /tmp/nvflare_own_model]
"""

import argparse
import sys
from pathlib import Path

from model import SITES, Net
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe import SimEnv

from gradguard.integrations.nvflare.filter import GuardFilter

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workspace", default="/tmp/nvflare_own_model")
    ap.add_argument("--verdict-log", default="", help="append every verdict here (JSON lines)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    recipe = FedAvgRecipe(
        name="gradguard_own_model",
        model=Net(),
        min_clients=SITES,
        num_rounds=args.rounds,
        train_script=str(HERE / "client.py"),
    )
    recipe.add_client_input_filter(
        GuardFilter(model="model:Net", data="model:guard_data", verdict_log=args.verdict_log),
        tasks=["train"],
    )
    recipe.add_client_file(str(HERE / "model.py"))
    run = recipe.execute(SimEnv(num_clients=SITES, workspace_root=args.workspace))
    print("result:", run.get_result())


if __name__ == "__main__":
    main()
