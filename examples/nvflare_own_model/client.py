"""The site's training script (NVFlare Client API): receive the global model, train one
epoch on the site's data, send the new weights back. gradguard is not mentioned here: the
GuardFilter checks the global model before this script receives it."""

import nvflare.client as flare
import torch
from model import Net, site_data
from nvflare.app_common.abstract.fl_model import FLModel
from torch.nn import functional as F

torch.set_num_threads(1)
flare.init()
site = flare.get_site_name()
x, y = site_data(site)
model = Net()
while flare.is_running():
    received = flare.receive()
    model.load_state_dict(received.params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for idx in torch.randperm(len(x)).split(32):
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    tx, ty = site_data("test")
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    flare.send(
        FLModel(
            params=model.state_dict(),
            metrics={"accuracy": acc},
            meta={"NUM_STEPS_CURRENT_ROUND": len(x)},
        )
    )
