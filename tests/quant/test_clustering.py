import numpy as np
import pytest
import torch
from scipy.cluster.vq import kmeans2, vq
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.kernels.int4_weight import unpack_int4
from shrinklib.quant import fake_quantize_weight, sqnr
from shrinklib.quant.clustering import (
    ClusterConfig,
    ClusteredLinear,
    PQConfig,
    PQEmbedding,
    cluster_,
    kmeans,
    pq_embeddings_,
)


def test_kmeans_matches_scipy_lloyd_from_the_same_start():
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(300, 3, generator=g) + torch.tensor([4.0, 0, 0]),
                        torch.randn(200, 3, generator=g) - torch.tensor([0, 4.0, 0]),
                        torch.randn(101, 3, generator=g)])
    start = points[[0, 350, 520, 10]].clone()
    ours, assignment = kmeans(points, start, iters=10)
    theirs, _ = kmeans2(points.double().numpy(), start.double().numpy(), iter=10, minit="matrix")
    assert np.allclose(ours.numpy(), theirs, atol=1e-4)
    assert np.array_equal(assignment.numpy(), vq(points.double().numpy(), theirs)[0])  # nearest final centroid


def test_clustered_weights_beat_a_uniform_grid_of_as_many_levels():
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    lin.weight.data = torch.distributions.Laplace(0.0, 0.05).sample((40, 96))  # peaked, heavy-tailed like trained weights
    clustered = ClusteredLinear.from_linear(lin, bits=3)
    shared = clustered.weight().detach()
    assert shared.unique().numel() <= 8 and clustered.indices.shape == (40, 48)
    uniform = fake_quantize_weight(lin.weight.detach(), 3, True)  # 8 levels per channel
    per_tensor_uniform = fake_quantize_weight(lin.weight.detach().reshape(1, -1), 3, True).reshape(40, 96)
    assert sqnr(lin.weight.detach(), shared) > sqnr(lin.weight.detach(), per_tensor_uniform) + 3
    assert sqnr(lin.weight.detach(), shared) > sqnr(lin.weight.detach(), uniform) - 1  # one codebook vs 40 grids


def test_centroid_gradient_is_the_sum_over_its_weights():
    lin = nn.Linear(6, 2)
    clustered = ClusteredLinear.from_linear(lin, bits=2)
    x = torch.randn(5, 6)
    clustered(x).sum().backward()
    weight = clustered.weight().detach().requires_grad_(True)
    nn.functional.linear(x, weight, clustered.bias).sum().backward()
    idx = unpack_int4(clustered.indices).long()
    expected = torch.zeros(4).index_add_(0, idx.flatten(), weight.grad.flatten())
    assert torch.allclose(clustered.codebook.grad, expected, atol=1e-6)


def test_product_quantized_embedding_rows_are_their_codewords():
    torch.manual_seed(0)
    table = nn.Embedding(300, 12)
    pq = PQEmbedding.from_embedding(table, subvectors=4, centroids=16)
    assert pq.codes.shape == (300, 4) and pq.codebooks.shape == (4, 16, 3)
    ids = torch.tensor([[0, 5, 299]])
    expected = torch.stack([torch.cat([pq.codebooks[j, pq.codes[i, j].long()] for j in range(4)]) for i in ids[0]])
    assert torch.equal(pq(ids)[0], expected)
    assert sqnr(table.weight.detach(), pq.dequantized_weight()) > 3


def test_on_bert_cluster_and_pq_round_trip(tmp_path):
    model = zoo.tiny_bert(vocab_size=300)
    ids = torch.randint(0, 300, (2, 7))
    reference = model(input_ids=ids).logits.detach()
    cluster_(model, ClusterConfig(bits=4))
    pq_embeddings_(model, PQConfig(subvectors=4, centroids=64))
    assert isinstance(model.bert.embeddings.word_embeddings, PQEmbedding)
    assert isinstance(model.bert.embeddings.token_type_embeddings, nn.Embedding)  # 2 rows: below 64 codewords
    logits = model(input_ids=ids).logits
    assert torch.corrcoef(torch.stack([logits.flatten(), reference.flatten()]))[0, 1] > 0.8
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path)(input_ids=ids).logits, logits)


def test_bad_input(unchanged):
    with pytest.raises(ValueError, match="points must be a nonempty"):
        kmeans(torch.empty(0, 2), 2)
    with pytest.raises(ValueError, match="k must be between 1 and the 3 points"):
        kmeans(torch.randn(3, 2), 5)
    model = zoo.tiny_bert(vocab_size=300)
    with unchanged(model):
        with pytest.raises(ValueError, match="subvectors=5 must divide"):
            pq_embeddings_(model, PQConfig(subvectors=5))
        with pytest.raises(ValueError, match="centroids=64 is more than the 2 rows"):
            pq_embeddings_(model, PQConfig(centroids=64), filter_fn=lambda m, fqn: "token_type" in fqn)
        with pytest.raises(ValueError, match="nothing to cluster"):
            cluster_(model, filter_fn=lambda m, fqn: False)
    odd = nn.Sequential(nn.Linear(8, 7), nn.Linear(7, 3))
    with unchanged(odd):  # the first layer could take 4-bit indices; the second is refused before it changes
        with pytest.raises(ValueError, match="4-bit indices are stored two to a byte; 1 has odd in_features"):
            cluster_(odd, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="centroids must be from 1 to 256"):
        PQEmbedding(10, 8, centroids=300)
    tied = nn.Sequential(nn.Embedding(300, 4), nn.Linear(4, 300))
    tied[1].weight = tied[0].weight
    with unchanged(tied):
        with pytest.raises(ValueError, match="tied embeddings"):
            pq_embeddings_(tied, PQConfig(subvectors=2, centroids=16))


def test_configs_are_checked_where_they_are_made():
    assert ClusterConfig() == ClusterConfig(4, 25) and PQConfig() == PQConfig(8, 256, 15)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        ClusterConfig(bits=1)
    with pytest.raises(ValueError, match="iters must be >= 1, got 0"):
        ClusterConfig(iters=0)
    with pytest.raises(ValueError, match="centroids must be from 1 to 256 \\(one byte per code\\), got 300"):
        PQConfig(centroids=300)
    with pytest.raises(ValueError, match="subvectors must be an int >= 1, got True"):
        PQConfig(subvectors=True)
    with pytest.raises(TypeError, match="config must be a ClusterConfig, got int"):
        cluster_(zoo.tiny_bert(), 4)
    with pytest.raises(TypeError, match="config must be a PQConfig, got int"):
        pq_embeddings_(zoo.tiny_bert(), 8)
