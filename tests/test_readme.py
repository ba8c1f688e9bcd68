"""The README's Python examples run as written, so the docs keep matching the code."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the examples write gradients.py
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    net, d = namespace["net"], namespace["d"]
    assert dict(net.parameters) == {"W1": (1, 1, 2, 2), "W2": (1, 1, 2, 2), "W3": (2, 4)}
    assert net.position_sets(1)[0] == (1, 2, 5, 6)
    assert str(d.chain("W2")[0, 0, 0, 0]) == (
        "a1_1*dL_da2_1*g_prime(z2_1) + a1_2*dL_da2_2*g_prime(z2_2) + "
        "a1_4*dL_da2_3*g_prime(z2_3) + a1_5*dL_da2_4*g_prime(z2_4)"
    )
    assert namespace["out"].grads["W1"].shape == (1, 1, 2, 2)
    assert (tmp_path / "gradients.py").exists()
    # the operations' examples say what they print
    mlp, lenet, ld = namespace["mlp"], namespace["lenet"], namespace["ld"]
    assert mlp.shapes == ((3,), (4,), (2,)) and str(mlp.derive().chain("W2")[1, 3]) == "a1_4*dL_da2_2"
    assert lenet.parameter_count == 61706 and lenet.shapes[1:3] == ((6, 28, 28), (6, 14, 14))
    assert str(ld.chain_of(ld.symbols.params["b6"][0])) == "dL_da6_1*(1 - a6_1**2)"
    assert list(namespace["weights"]) == ["W1", "b1", "W3", "b3"]
    assert namespace["grads"]["W1"].shape == (2, 1, 3, 3)
    formulas = namespace["formulas"]  # the tensor view
    assert [f.kind for f in formulas] == ["forward", "activation", "loss", "delta", "W", "fact", "input", "fact"]
    assert formulas[4].latex() == (
        r"\frac{\partial L}{\partial W^{(1)}_{o,c,m,n}} = \sum_{i,j} \delta^{(1)}_{o,i,j} \cdot "
        r"x_{c,s i + d m - p,s j + d n - p}"
    )
    assert namespace["fact"].statement.startswith("the input gradient is the full cross-correlation")
    block, bd = namespace["block"], namespace["bd"]  # the residual block
    assert block.sources == ((0,), (1,), (1, 2), (3,), (4,), (5,)) and block.consumers(1) == (2, 3)
    assert list(block.parameters) == ["W1", "W2", "W6"]
    upstream = bd.upstream(bd.layer(1).upstream[0])
    assert "dL_da3_1" in str(upstream) and "W2_0_0_1_1" in str(upstream)  # both readers' terms


def test_the_readme_spec_is_the_article_preset(tmp_path):
    import symbackprop as sb

    specs = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    path = tmp_path / "net.yaml"
    path.write_text(specs[0])
    assert sb.load_spec(path).layers == sb.presets.article().layers
    path.write_text(specs[1])  # the residual block, as a spec
    residual = sb.load_spec(path)
    assert residual.sources == ((0,), (1,), (1, 2), (3,), (4,), (5,))
    assert residual.layer_names[:2] == ("stem", "branch")
